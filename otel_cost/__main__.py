from otel_cost.cli import main

if __name__ == "__main__":  # pipeline workers re-import this module under spawn
    main()
