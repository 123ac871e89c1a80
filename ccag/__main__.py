from ccag.cli import main

raise SystemExit(main())
