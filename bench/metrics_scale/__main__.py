from bench.metrics_scale.run import main

main()
