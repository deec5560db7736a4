"""`python -m medgrpo.analysis [--sweep DIR] ...`: the ablation table, the same command as analysis/ablation_table.py."""
import sys

from medgrpo.analysis.report import main

sys.exit(main())
