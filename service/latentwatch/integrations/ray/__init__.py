"""Ray: offline audits that outgrow one machine (``latentwatch score FILE --ray``)."""
