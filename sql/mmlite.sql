-- mmlite extension (installed as mmlite--<version>.sql; the version is in the VERSION file)
\echo Use "CREATE EXTENSION mmlite" to load this file. \quit

CREATE FUNCTION mmlite.version() RETURNS text
    AS 'MODULE_PATHNAME', 'mmlite_version'
    LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;
COMMENT ON FUNCTION mmlite.version() IS 'version of the mmlite.so this server loads';
