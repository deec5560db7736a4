"""`python -m medgrpo.analysis [--sweep DIR] ...`: the ablation table, as analysis/ablation_table.py runs it."""
import sys

from medgrpo.analysis.report import main

sys.exit(main())
