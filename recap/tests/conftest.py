import sys
from pathlib import Path

# The synthetic-transcript builder lives beside the tests (the benchmarks use it too).
sys.path.insert(0, str(Path(__file__).parent))
