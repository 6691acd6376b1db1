"""mmsar: assemble the MMSAR vision-language dataset from many detection sources, and make synthetic SAR
scenes with exact annotations."""

__version__ = "0.1.0"
