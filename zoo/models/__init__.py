"""The built-in model plugins: every module of this folder is one plugin file, and nothing
outside it is.  `import zoo` imports each of them (zoo/__init__.py); a new model is one new
file here (or an out-of-tree package: docs/models/plugins.md)."""
