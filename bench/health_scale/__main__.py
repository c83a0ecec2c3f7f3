from bench.health_scale.run import main

main()
