"""Front ends: regex and EBNF/Lark text lowered to grammar IR (JSON Schema has its own, in
json_schema/; a choice list is lowered in backends/intaglio_backend.py)."""
