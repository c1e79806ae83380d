"""`python -m loadtest`: see loadtest.runner."""

from loadtest.runner import main

raise SystemExit(main())
