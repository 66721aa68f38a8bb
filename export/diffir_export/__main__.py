import sys

from diffir_export.cli import main

sys.exit(main())
