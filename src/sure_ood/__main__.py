from sure_ood.cli import main

raise SystemExit(main())
