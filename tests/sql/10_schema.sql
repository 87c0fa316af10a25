-- The installed schema: types, tables and columns exactly as the contract
-- says, the indexes and CHECK constraints, pg_dump registration, comments,
-- function signatures and the GUCs with their defaults.

SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) AS labels
  FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
 WHERE t.typnamespace = 'provision'::regnamespace
 GROUP BY t.typname ORDER BY t.typname;

SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS not_null, a.attidentity AS identity,
       pg_get_expr(d.adbin, d.adrelid) AS default
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE c.relnamespace = 'provision'::regnamespace AND c.relkind = 'r'
 ORDER BY c.relname, a.attnum;

-- The opaque keys compare byte for byte; no other column has a collation
-- of its own.
SELECT c.relname, a.attname, a.attcollation::regcollation AS collation
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'provision'::regnamespace AND c.relkind = 'r'
   AND a.attcollation NOT IN (0, 'pg_catalog.default'::regcollation)
 ORDER BY c.relname, a.attname;

SELECT conrelid::regclass AS "table", conname, pg_get_constraintdef(oid) AS definition
  FROM pg_constraint
 WHERE connamespace = 'provision'::regnamespace
 ORDER BY conrelid::regclass::text, conname;

SELECT indexrelid::regclass AS index, pg_get_indexdef(indexrelid) AS definition
  FROM pg_index
 WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'provision'::regnamespace)
 ORDER BY indexrelid::regclass::text;

-- Every table and the events sequence are dumped with their rows.
SELECT unnest(extconfig)::regclass AS dumped, unnest(extcondition) AS condition
  FROM pg_extension WHERE extname = 'provision' ORDER BY 1::text;

-- Every object of the extension carries a comment.
SELECT c.oid::regclass AS uncommented
  FROM pg_class c
 WHERE c.relnamespace = 'provision'::regnamespace AND c.relkind IN ('r', 'i')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.oid::regprocedure AS uncommented
  FROM pg_proc p
 WHERE p.pronamespace = 'provision'::regnamespace
   AND obj_description(p.oid, 'pg_proc') IS NULL;
SELECT c.oid::regclass AS uncommented
  FROM pg_class c
 WHERE c.relnamespace = 'provision'::regnamespace AND c.relkind = 'S'
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT format('%s on %s', conname, conrelid::regclass) AS uncommented
  FROM pg_constraint
 WHERE connamespace = 'provision'::regnamespace
   AND obj_description(oid, 'pg_constraint') IS NULL;
SELECT obj_description('provision'::regnamespace, 'pg_namespace') IS NOT NULL AS schema_commented;
SELECT t.oid::regtype AS uncommented
  FROM pg_type t
 WHERE t.typnamespace = 'provision'::regnamespace AND t.typtype = 'e'
   AND obj_description(t.oid, 'pg_type') IS NULL;
SELECT format('%s.%s', c.relname, a.attname) AS uncommented
  FROM pg_class c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relnamespace = 'provision'::regnamespace AND c.relkind = 'r'
   AND col_description(c.oid, a.attnum) IS NULL;

-- Signatures, defaults and return types.
SELECT p.oid::regprocedure AS function,
       pg_get_function_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS returns,
       p.proisstrict AS strict, p.provolatile AS volatility
  FROM pg_proc p
 WHERE p.pronamespace = 'provision'::regnamespace
 ORDER BY p.proname;

-- The GUCs, their defaults, units and contexts (they exist once the
-- library is loaded, which any provision function call also does).
LOAD 'provision';
SELECT name, setting, unit, context, vartype, boot_val
  FROM pg_settings WHERE name LIKE 'provision.%' ORDER BY name;
SHOW provision.heartbeat_timeout;
SHOW provision.history_retention;
SET provision.heartbeat_timeout = '1min';
SHOW provision.heartbeat_timeout;
SET provision.history_retention = '2h';
SHOW provision.history_retention;
SET provision.heartbeat_timeout = 0;
RESET provision.heartbeat_timeout;
RESET provision.history_retention;
-- The prefix is reserved: a misspelt setting is an error, not a silent placeholder.
SET provision.notfy = off;
