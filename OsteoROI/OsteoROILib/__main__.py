"""``python -m OsteoROILib`` runs the ``osteoroi`` command line."""
import sys

from .cli import main

sys.exit(main())
