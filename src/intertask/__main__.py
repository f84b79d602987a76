from intertask.cli import main

raise SystemExit(main())
