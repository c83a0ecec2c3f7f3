"""The configuration's fast paths against the general ones.

``agent.config.composer`` (libyaml's events composed into line-numbered nodes)
must read every document as ``yaml.safe_load`` does; ``agent.config.quick`` must
build the same VirtualServer as the loader's general rules, and never an entry
those rules refuse. Documents are generated from pieces chosen to sit on YAML's
edges, and written by PyYAML's emitter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from agent.config import quick
from agent.config.loader import parse_config
from agent.config.reader import ConfigError, Problems, ScalarNode, compose
from tests.unit.config.twins import general_virtual_server, safe_load_agrees

KEYS = ["name", "address", "port", "weight", "a", "b_c", "real_servers", "x-y", "on", "<<"]
SCALARS = [
    "vs1",
    "10.0.0.1",
    "2001:db8::1",
    "::1",
    "fe80::1:2",
    "80",
    "0",
    "08",
    "0x50",
    "-5",
    "1_000",
    "1.5",
    "a:b",
    "a: b",
    "a:",
    "x #y",
    "x#y",
    "~",
    "null",
    "yes",
    "No",
    "tcp",
    "wlc",
    '"q"',
    "'q'",
    '"a\\"b"',
    "'it''s'",
    '"x"# c',
    '"x" # c',
    "a  b",
    "é",
    "@x",
    "`x",
    "%x",
    "? x",
    "&a x",
    "*a",
    "!!str 1",
    "|",
    ">",
    "- x",
    "-",
    "[1, 2]",
    "[]",
    "{}",
    "{a: 1, b: 2}",
    "{a: 1,}",
    "{a: 1, a: 2}",
    '{a: "b"}',
    "{a: 'b, c'}",
    "{a: ::1}",
    "{a: 2001:db8::5, port: 80}",
    "{a}",
    "{a: [1]}",
    "[a, {b: 1}]",
    "1 # c",
    "# c",
    "",
    "a\tb",
    "x ",
    "{address: 10.0.0.1, port: 8080, weight: 1}",
]
INDENTS = [0, 1, 2, 3, 4, 6]


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    if draw(st.booleans()):
        lines.append(draw(st.sampled_from(["---", "# head", "", "--- # x"])))
    for _ in range(draw(st.integers(1, 14))):
        indent = " " * draw(st.sampled_from(INDENTS))
        dash = draw(st.sampled_from(["", "", "- ", "-  ", "- - "]))
        form = draw(st.integers(0, 3))
        key = draw(st.sampled_from(KEYS))
        value = draw(st.sampled_from(SCALARS))
        if form == 0:
            line = f"{indent}{dash}{key}: {value}"
        elif form == 1:
            line = f"{indent}{dash}{key}:"
        elif form == 2:
            line = f"{indent}{dash}{value}"
        else:
            line = f"{indent}# comment {value}"
        lines.append(line + draw(st.sampled_from(["", "", " ", "  # t", "\r"])))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
@example("<<: []\n")  # an empty merge: the key goes, nothing is merged
@example("name: &a x\nname: &a x\n")  # an anchor given twice is refused, as by PyYAML
def test_composer_reads_what_safe_load_reads(text: str) -> None:
    safe_load_agrees(text)


@st.composite
def entries(draw: st.DrawFn) -> str:
    def value(pool: list[str]) -> str:
        return draw(st.sampled_from(pool))

    fields = {
        "name": ["vs1", "web.a-b_1", "x" * 65, "", '"q"', "yes", "é"],
        "address": [
            "10.0.0.1",
            "2001:db8::1",
            "224.0.0.1",
            "0.0.0.0",
            "'::'",
            "ff02::1",
            "10.0.0",
            '"10.0.0.2"',
            "~",
        ],
        "port": ["80", "0", "65536", "08", "0x50", '"80"', "1_0"],
        "protocol": ["tcp", "udp", "sctp", "icmp"],
        "scheduler": ["wlc", "rr", "mh", "bogus"],
        "forwarding": ["nat", "dr", "tunnel", "bridge"],
        "one_packet": ["true"],
        "fwmark": ["7"],
    }
    lines = []
    for key, pool in fields.items():
        if draw(st.integers(0, 9)) < (8 if key in ("name", "address", "port") else 3):
            lines.append(f"  {key}: {value(pool)}")
    lines = draw(st.permutations(lines))
    rs_lines = []
    for _ in range(draw(st.integers(0, 4))):
        parts = [f"address: {value(['10.0.1.1', '10.0.1.2', '2001:db8::9', '10.0.1', '0.0.0.0'])}"]
        for key, pool in (
            ("port", ["8080", "80", "0", "70000"]),
            ("weight", ["1", "0", "65535", "65536", "-1"]),
            ("upper_threshold", ["0", "10", "5"]),
            ("lower_threshold", ["0", "5", "10"]),
            ("forwarding", ["nat", "dr", "tunnel", "x"]),
            ("tunnel_type", ["gue"]),
            ("address", ["10.0.1.3"]),
        ):
            if draw(st.integers(0, 3)) == 0:
                parts.append(f"{key}: {value(pool)}")
        rs_lines.append("    - {" + ", ".join(draw(st.permutations(parts))) + "}")
    if rs_lines or draw(st.booleans()):
        lines.append("  real_servers:" + ("" if rs_lines else " []"))
        lines += rs_lines
    if not lines:
        return "virtual_servers:\n- {}\n"
    return "virtual_servers:\n- " + "\n".join(lines)[2:] + "\n"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries())
def test_quick_builds_what_the_general_reader_builds_or_declines(text: str) -> None:
    got: list[object] = []
    problems = Problems("t.yaml")
    compose(text, problems, {"virtual_servers": lambda node, _i: got.append(node)})
    if problems.found:
        return  # not YAML (a value like "::"): nothing for either reader to build
    for node in got:
        real = getattr(quick.virtual_server, "__wrapped__", None) or quick.virtual_server
        fast = real(node)  # type: ignore[arg-type]
        if fast is not None:
            slow, found = general_virtual_server(node)  # type: ignore[arg-type]
            assert not found, (text, found)
            assert fast == slow, text


def generated(n: int) -> str:
    out = ["state_dir: /var/lib/x", "virtual_servers:"]
    for i in range(n):
        out.append(f"  - name: vs{i}\n    address: 10.1.0.{i + 1}\n    port: 80\n    real_servers:")
        out += [f"      - {{address: 10.2.{i}.{j + 1}, port: 8080, weight: 1}}" for j in range(4)]
    return "\n".join(out) + "\n"


def test_generated_files_take_the_quick_path() -> None:
    text = generated(20)
    calls: list[bool] = []
    real = quick.virtual_server

    def counting(node: object, *args: object) -> object:
        result = real(node, *args)  # type: ignore[arg-type]
        calls.append(result is not None)
        return result

    quick.virtual_server = counting  # type: ignore[assignment]
    try:
        config = parse_config(text)
    finally:
        quick.virtual_server = real
    assert calls == [True] * 20
    assert len(config.virtual_servers) == 20
    assert config.virtual_servers[3].real_servers[2].address == "10.2.3.3"
    # state_dir, virtual_servers, then 8 lines per entry
    assert config.virtual_servers[3].real_servers[2].line == 3 + 8 * 3 + 4 + 2


def test_errors_in_a_generated_file_are_reported_by_the_general_reader() -> None:
    text = generated(5).replace("10.2.3.3, port: 8080", "10.2.3.3, port: 80800")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "big.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "big.yaml:33: virtual_servers[3].real_servers[2].port: must be 1..65535, got 80800"
    ]


def _pyyaml_tag(value: str) -> str:
    import yaml

    resolvers = yaml.resolver.Resolver.yaml_implicit_resolvers
    for tag, regexp in resolvers.get(value[:1] if value else "", []) + resolvers.get(None, []):
        if regexp.match(value):
            return str(tag)
    return "tag:yaml.org,2002:str"


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.text(alphabet="0123456789.:-+_exoabfnNtTyYsmhdzZEO~/ ", max_size=8),
        st.sampled_from(["yes", "Off", "NULL", "~", ".inf", "0x1F", "08", "1:30", "2001-12-14"]),
        st.text(max_size=4),
    )
)
def test_plain_scalar_types_are_pyyamls(value: str) -> None:
    """ScalarNode.tag skips PyYAML's resolvers for common values; it must agree with them."""
    assert ScalarNode(1, value, None).tag == _pyyaml_tag(value)


REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    "path",
    [REPO / "config.example.yaml", *sorted((REPO / "tests").rglob("*.yaml"))],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_repository_yaml_files_read_as_safe_load_reads_them(path: Path) -> None:
    safe_load_agrees(path.read_text())


_VALUES = st.one_of(
    st.sampled_from(
        [
            "10.0.0.1",
            "2001:db8::1",
            "fe80::1%eth0",
            "10.0.0.1/24",
            "/usr/bin/check --x 'a b'",
            "30s",
            "yes",
            "no",
            "",
            "~",
            "0700",
            "1:30",
            "a: b",
            "x # y",
            "-1",
            "1e3",
            "é",
            "x" * 90 + " " + "y" * 20,
            "line\nbreak",
            "tab\there",
            "quote'\"",
            "[a]",
            "{b}",
        ]
    ),
    st.integers(-5, 70000),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
)
_KEYS = st.sampled_from(["name", "address", "port", "a_b", "on", "x-y", "k1"])
_DOCS = st.recursive(
    _VALUES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _DOCS, min_size=1, max_size=4), st.sampled_from([None, True, False]))
def test_what_pyyaml_writes_reads_alike(doc: dict[str, object], flow: bool | None) -> None:
    """Generated configurations (the lab's, Ansible's) come from a YAML emitter."""
    import yaml

    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=flow, allow_unicode=True)
    safe_load_agrees(text)
