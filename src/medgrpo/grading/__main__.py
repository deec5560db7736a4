import sys

from medgrpo.grading.cli import main

sys.exit(main())
