"""Everything a study exports, in one place, shared by the pages and the API.

- `tables`: the rows of each export (ratings in long form, responses, audit trail) and their columns.
- `csv`: CSV text from rows: spreadsheet-formula neutralising, streamed a batch at a time.
- `bundle`: the zip of every table with a codebook and a manifest of row counts and sha256s.
"""
