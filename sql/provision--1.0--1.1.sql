-- provision 1.0 -> 1.1 (ALTER EXTENSION provision UPDATE TO '1.1').
-- Every 1.1 change to the schema is here, in the order it was made; a
-- database updated through this script must end with the same objects as
-- one created by sql/provision.sql at 1.1, with every 1.0 row kept.
\echo Use "ALTER EXTENSION provision UPDATE TO '1.1'" to load this file. \quit
