"""The cavelab engine: pure Python, imports nothing from tornado, jupyter or widgets."""
