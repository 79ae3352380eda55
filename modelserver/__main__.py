"""``python -m modelserver ...`` - see :mod:`modelserver.cli`."""

from modelserver.cli import main

raise SystemExit(main())
