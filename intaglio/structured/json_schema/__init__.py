"""The JSON Schema front end: a schema lowered to grammar IR (compiler.py walks the schema; the
other files each handle one family of keywords)."""
