"""`python -m bench [--quick] [--only ROUTE]`: run the benchmarks and write bench/results/."""

import sys

from bench.run import main

sys.exit(main())
