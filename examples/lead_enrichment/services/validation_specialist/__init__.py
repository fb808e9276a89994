"""The validation specialist: exact checks of LEIs, IBANs and VAT numbers."""
