/*
 * What the native apply trigger (mmlite_apply.c, ApplyPlan.swift) relies on
 * in the objects `mmlite apply` generates (Sources/MMLiteCore/Conflict.swift):
 * the C side of MMLiteCore's ConflictContract. The two are written twice, in
 * two languages; Tests/MMLiteCoreTests/ConflictContractTests.swift reads this
 * file and fails when they differ. Plain #defines and enums only (no PostgreSQL
 * headers), so that test can read them and Swift can import them.
 */
#ifndef MMLITE_CONTRACT_H
#define MMLITE_CONTRACT_H

/*
 * The change table's mm_* columns the trigger reads (all but mm_id), and the
 * version table's columns besides the key, in this order: mmlite_apply.c
 * refers to them by position.
 */
#define MMLITE_CHANGE_COLUMNS {"mm_node", "mm_op", "mm_v_ms", "mm_v_counter", "mm_prev_ms", "mm_prev_counter", "mm_prev_node"}
#define MMLITE_VERSION_COLUMNS {"v_ms", "v_counter", "v_node", "op", "changed_at", "prev_ms", "prev_counter", "prev_node", "prev_op"}

/* Positions in those two lists. */
enum
{
	MMLITE_C_NODE, MMLITE_C_OP, MMLITE_C_V_MS, MMLITE_C_V_COUNTER, MMLITE_C_PREV_MS, MMLITE_C_PREV_COUNTER, MMLITE_C_PREV_NODE
};
enum
{
	MMLITE_V_MS, MMLITE_V_COUNTER, MMLITE_V_NODE, MMLITE_V_OP, MMLITE_V_CHANGED_AT, MMLITE_V_PREV_MS, MMLITE_V_PREV_COUNTER,
	MMLITE_V_PREV_NODE, MMLITE_V_PREV_OP
};

/* Where a table's change and version tables are: schema mmlite, "schema.table" with these suffixes. */
#define MMLITE_SCHEMA "mmlite"
#define MMLITE_CHANGES_SUFFIX "$changes"
#define MMLITE_VERSIONS_SUFFIX "$versions"

/* The values of mm_op (change table) and op (version table; "delete" is a tombstone). */
#define MMLITE_OP_INSERT_NAME "insert"
#define MMLITE_OP_UPDATE_NAME "update"
#define MMLITE_OP_DELETE_NAME "delete"

/* Their codes between C and ApplyPlan.swift's ChangeOp; 0 is any other op. */
#define MMLITE_OP_INSERT 1
#define MMLITE_OP_UPDATE 2
#define MMLITE_OP_DELETE 3

/* ApplyPlan.swift's answers: hand the change to the SQL apply function, or apply it here. */
#define MMLITE_PLAN_SQL 0
#define MMLITE_PLAN_APPLY 1

/* mmlite.apply_change()'s trigger arguments: user table, version table, SQL apply function(), node name. */
#define MMLITE_APPLY_ARGUMENTS 4

/* mmlite.capture_change()'s fixed trigger arguments: version table, change table, SQL capture function(), node name; then the installed columns. */
#define MMLITE_CAPTURE_ARGUMENTS 4

#endif							/* MMLITE_CONTRACT_H */
