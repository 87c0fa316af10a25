-- Ceiling: the cheapest round trip and transaction there is.
SELECT 1;
