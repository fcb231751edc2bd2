"""Data: the Database, the model base, one module per table, and the migrations."""
