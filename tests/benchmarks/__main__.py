from tests.benchmarks.runner import main

main()
