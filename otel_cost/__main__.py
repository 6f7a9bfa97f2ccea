from otel_cost.cli import main

main()
