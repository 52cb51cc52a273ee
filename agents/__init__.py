"""The research agent: a Ray actor that edits train.py, trains it under the budget and reports."""
