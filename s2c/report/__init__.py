"""`s2c report DIR`: one self-contained HTML file of a run, a compiled dataset or an eval."""
