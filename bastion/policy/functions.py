"""What PostgreSQL functions do, as far as the policy is concerned.

Three lists: functions that are dangerous (server files, large objects, SQL from strings, other sessions,
side effects on shared state), functions that change session state, and built-ins known to be plain reads.
A function on none of them is treated as user-defined: it may write and its output cannot be traced, so
the classifier marks it and lineage treats its result as unknown. Names are compared without a
`pg_catalog.` qualifier; a function qualified with any other schema is never a built-in.
"""

from __future__ import annotations

DANGEROUS = frozenset(
    {
        # server files and directories
        "pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir", "pg_ls_waldir",
        "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir", "pg_ls_logicalmapdir",
        "pg_ls_replslotdir", "pg_file_write", "pg_file_rename", "pg_file_unlink", "pg_file_sync",
        "pg_logdir_ls", "pg_current_logfile",
        # large objects: files on the server, and data outside tables
        "lo_import", "lo_export", "lo_from_bytea", "lo_put", "lo_get", "lo_create", "lo_creat", "lo_unlink",
        "lo_open", "lo_close", "loread", "lowrite", "lo_truncate", "lo_truncate64", "lo_lseek", "lo_lseek64",
        "lo_tell", "lo_tell64",
        # SQL from strings, and whole tables read around column lineage
        "dblink", "dblink_exec", "dblink_open", "dblink_fetch", "dblink_close", "dblink_connect",
        "dblink_connect_u", "dblink_send_query", "dblink_get_result", "query_to_xml", "query_to_xmlschema",
        "query_to_xml_and_xmlschema", "cursor_to_xml", "cursor_to_xmlschema", "table_to_xml",
        "table_to_xmlschema", "table_to_xml_and_xmlschema", "schema_to_xml", "schema_to_xmlschema",
        "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema",
        "database_to_xml_and_xmlschema", "ts_stat", "ts_rewrite",
        # other sessions and the server itself
        "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "pg_promote",
        "pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_backup_stop", "pg_start_backup",
        "pg_stop_backup", "pg_wal_replay_pause", "pg_wal_replay_resume", "pg_log_backend_memory_contexts",
        "pg_stat_reset", "pg_stat_reset_shared", "pg_stat_reset_single_table_counters",
        "pg_stat_reset_single_function_counters", "pg_stat_reset_slru", "pg_stat_reset_replication_slot",
        "pg_stat_reset_subscription_stats", "pg_import_system_collations", "pg_notify",
        "pg_logical_emit_message", "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot", "pg_copy_physical_replication_slot", "pg_copy_logical_replication_slot",
        "pg_replication_slot_advance", "pg_logical_slot_get_changes", "pg_logical_slot_peek_changes",
        "pg_logical_slot_get_binary_changes", "pg_logical_slot_peek_binary_changes", "pg_export_snapshot",
        "pg_replication_origin_create", "pg_replication_origin_drop", "pg_replication_origin_session_setup",
        "pg_replication_origin_advance", "brin_summarize_new_values", "brin_summarize_range",
        "brin_desummarize_range", "gin_clean_pending_list",
        # side effects on shared state
        "nextval", "setval", "pg_advisory_lock", "pg_advisory_lock_shared", "pg_advisory_unlock",
        "pg_advisory_unlock_shared", "pg_advisory_unlock_all", "pg_advisory_xact_lock",
        "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
        "pg_try_advisory_xact_lock", "pg_try_advisory_xact_lock_shared",
        # assign a transaction id when none is yet: consumes the cluster-wide xid counter (wraparound), and
        # the transaction must write a commit record (txid_current_if_assigned and friends do not assign)
        "txid_current", "pg_current_xact_id",
    }
)  # fmt: skip

# set_config changes settings; setseed changes the session's random() sequence for every later statement.
SESSION = frozenset({"set_config", "setseed"})

# Built-ins that only compute from their arguments or read harmless server state. sqlglot parses many
# built-ins into typed expressions; these are the ones it leaves as anonymous calls.
SAFE_BUILTINS = frozenset(
    {
        # strings
        "ascii", "bit_length", "btrim", "char_length", "character_length", "chr", "concat_ws", "initcap",
        "lpad", "ltrim", "octet_length", "overlay", "position", "quote_ident", "quote_literal",
        "quote_nullable", "regexp_count", "regexp_instr", "regexp_like", "regexp_match", "regexp_matches",
        "regexp_split_to_array", "regexp_split_to_table", "regexp_substr", "repeat", "replace", "right",
        "rpad", "rtrim", "starts_with", "string_to_array", "string_to_table", "strpos", "substr", "to_ascii",
        "to_hex", "translate", "unistr", "normalize", "decode", "encode", "convert", "convert_from",
        "convert_to", "sha224", "sha256", "sha384", "sha512", "crc32", "crc32c", "parse_ident", "left",
        "textlen", "textcat", "bpchar", "varchar", "text", "name",
        # numbers
        "abs", "cbrt", "ceil", "ceiling", "degrees", "div", "exp", "factorial", "floor", "gcd", "lcm", "ln",
        "log", "log10", "min_scale", "mod", "pi", "power", "radians", "round", "scale", "sign", "sqrt",
        "trim_scale", "trunc", "width_bucket", "random", "random_normal", "acos", "asin", "atan",
        "atan2", "cos", "cot", "sin", "tan", "acosd", "asind", "atand", "atan2d", "cosd", "cotd", "sind",
        "tand", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "to_number", "numeric", "int4", "int8",
        "float8",
        # dates and times
        "age", "clock_timestamp", "current_date", "date_bin", "date_part", "date_trunc", "isfinite",
        "justify_days", "justify_hours", "justify_interval", "localtime", "localtimestamp", "make_date",
        "make_interval", "make_time", "make_timestamp", "make_timestamptz", "now", "statement_timestamp",
        "timeofday", "transaction_timestamp", "to_char", "to_date", "to_timestamp", "timezone",
        # json and jsonb
        "array_to_json", "json_array_elements", "json_array_elements_text", "json_array_length",
        "json_build_array", "json_build_object", "json_each", "json_each_text", "json_extract_path",
        "json_extract_path_text", "json_object", "json_object_keys", "json_populate_record",
        "json_populate_recordset", "json_strip_nulls", "json_to_record", "json_to_recordset", "json_typeof",
        "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array",
        "jsonb_build_object", "jsonb_each", "jsonb_each_text", "jsonb_extract_path",
        "jsonb_extract_path_text",
        "jsonb_insert", "jsonb_object", "jsonb_object_keys", "jsonb_path_exists", "jsonb_path_match",
        "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_populate_record",
        "jsonb_populate_recordset", "jsonb_pretty", "jsonb_set", "jsonb_set_lax", "jsonb_strip_nulls",
        "jsonb_to_record", "jsonb_to_recordset", "jsonb_typeof", "row_to_json", "to_json", "to_jsonb",
        "json_agg", "jsonb_agg", "json_object_agg", "jsonb_object_agg", "json_agg_strict", "jsonb_agg_strict",
        # arrays
        "array_append", "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_ndims",
        "array_position", "array_positions", "array_prepend", "array_remove", "array_replace",
        "array_sample", "array_shuffle", "array_to_string", "array_upper", "cardinality", "trim_array",
        "unnest", "generate_subscripts",
        # aggregates and windows
        "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "every", "string_agg", "xmlagg", "mode",
        "percentile_cont", "percentile_disc", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy",
        "regr_count", "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy",
        "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "range_agg",
        "range_intersect_agg", "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile",
        "lag", "lead", "first_value", "last_value", "nth_value", "any_value",
        # range and multirange constructors, type helpers
        "int4range", "int8range", "numrange", "tsrange", "tstzrange", "daterange", "int4multirange",
        "int8multirange", "nummultirange", "tsmultirange", "tstzmultirange", "datemultirange",
        "multirange", "unnest_multirange", "to_regtypemod", "pg_input_is_valid", "pg_input_error_info",
        "array_agg", "json_scalar", "json_serialize", "jsonb_path_exists_tz", "jsonb_path_query_tz",
        "jsonb_path_match_tz", "date_add", "date_subtract", "extract", "uuid_extract_timestamp",
        "uuid_extract_version", "md5", "sha1",
        # xml: parsing and XPath over a value (query_to_xml and friends, which run SQL, are dangerous)
        "xpath", "xpath_exists", "xml_is_well_formed", "xml_is_well_formed_document",
        "xml_is_well_formed_content", "xmlcomment", "xmlconcat", "xmltext",
        # ROW(...) is a row constructor, not a call (sqlglot reads it as one); its record is traced by lineage
        "row",
        # series, uuids, network, ranges, text search (not ts_stat / ts_rewrite)
        "generate_series", "gen_random_uuid", "host", "hostmask", "masklen", "netmask",
        "network", "set_masklen", "broadcast", "family", "inet_merge", "inet_same_family", "abbrev",
        "lower_inc", "upper_inc", "lower_inf", "upper_inf", "isempty", "range_merge", "to_tsvector",
        "to_tsquery", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery", "ts_rank", "ts_rank_cd",
        "ts_headline", "setweight", "strip", "tsvector_to_array", "array_to_tsvector", "numnode",
        "querytree", "get_current_ts_config", "ts_debug", "ts_lexize", "ts_parse", "ts_token_type",
        # harmless server and catalog information
        "current_database", "current_catalog", "current_schema", "current_schemas", "current_user",
        "current_role", "session_user", "user", "version", "pg_backend_pid", "pg_postmaster_start_time",
        "pg_conf_load_time", "inet_client_addr", "inet_client_port", "inet_server_addr", "inet_server_port",
        "current_setting", "pg_typeof", "format_type", "pg_size_pretty", "pg_size_bytes",
        "pg_relation_size", "pg_total_relation_size", "pg_table_size", "pg_indexes_size",
        "pg_database_size", "pg_column_size", "pg_get_viewdef", "pg_get_indexdef", "pg_get_constraintdef",
        "pg_get_functiondef", "pg_get_function_arguments", "pg_get_function_result", "pg_get_triggerdef",
        "pg_get_ruledef", "pg_get_expr", "pg_get_userbyid", "pg_get_serial_sequence", "obj_description",
        "col_description", "shobj_description", "has_table_privilege", "has_column_privilege",
        "has_schema_privilege", "has_database_privilege", "has_function_privilege", "has_sequence_privilege",
        "pg_has_role", "to_regclass", "to_regtype", "to_regproc", "to_regprocedure", "to_regnamespace",
        "to_regrole", "pg_is_in_recovery", "pg_last_xact_replay_timestamp", "pg_current_wal_lsn",
        "pg_wal_lsn_diff", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "txid_current_if_assigned",
        "pg_current_xact_id_if_assigned", "txid_current_snapshot", "pg_current_snapshot",
        "pg_xact_commit_timestamp", "currval", "lastval",
        "pg_table_is_visible", "pg_function_is_visible", "pg_type_is_visible", "num_nulls", "num_nonnulls",
        "pg_blocking_pids", "pg_jit_available", "pg_listening_channels", "pg_my_temp_schema",
        "pg_trigger_depth", "pg_client_encoding", "pg_encoding_to_char", "pg_char_to_encoding",
    }
)  # fmt: skip

# Functions of common extensions that only compute from their arguments, by the extension that defines
# them. They live in an ordinary schema (usually public), so the live-catalog check counts a call to one as
# the extension's only when the catalog says every function of that name on the search path belongs to
# that extension; otherwise it is judged as the user function it may be (catalog_checks.shadowed_calls).
EXTENSION_SAFE: dict[str, str] = {
    **dict.fromkeys(("crypt", "gen_salt", "digest", "hmac", "gen_random_bytes"), "pgcrypto"),
    **dict.fromkeys(
        ("uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v3", "uuid_generate_v4", "uuid_generate_v5",
         "uuid_nil", "uuid_ns_dns", "uuid_ns_url", "uuid_ns_oid", "uuid_ns_x500"),
        "uuid-ossp",
    ),
}  # fmt: skip


def is_safe(name: str) -> bool:
    """A built-in or extension function known to be a plain read (by lower-cased, unqualified name)."""
    return name in SAFE_BUILTINS or name in EXTENSION_SAFE


def base_name(qualifier: str | None, name: str) -> tuple[str, bool]:
    """(lower-cased name, qualified by a user schema) for a call like `pg_catalog.lower` or `app.f`; the
    qualifier comes folded as PostgreSQL folds it, so a quoted "PG_CATALOG" is a user schema."""
    lowered = name.lower()
    if qualifier is None or qualifier == "pg_catalog":
        return lowered, False
    return lowered, True
