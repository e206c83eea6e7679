/*
 * mmlite.apply_change(): the native apply trigger for conflict handling
 * (docs/conflicts.md, "Native apply").
 *
 * Installed by `mmlite apply` as
 *   CREATE TRIGGER mmlite_apply BEFORE INSERT ON mmlite."s.t$changes"
 *       FOR EACH ROW EXECUTE FUNCTION mmlite.apply_change(
 *           'user table', 'version table', 'SQL apply function()', 'this node');
 * (ENABLE REPLICA: it fires only in the apply worker). It takes the common
 * cases straight to the tables with the executor's simple-relation API, the
 * way the apply worker itself applies a plain change: no SQL statements, no
 * plans. They are
 *   - an update or delete of an existing row that was written on top of this
 *     node's version of the row (or of a row this node never versioned);
 *   - an insert of a key this node has neither a row nor a version of
 *     (row and version inserted speculatively, the mechanism of INSERT ...
 *     ON CONFLICT: a key that exists or that another transaction is
 *     inserting goes to SQL, which waits for it, never a duplicate-key error).
 * Under every policy these apply and log nothing. Everything else (a
 * tombstone, a genuine conflict, a column whose type differs, a table with
 * BEFORE ROW triggers or stored generated columns) goes to the generated
 * plpgsql function, which decides and logs exactly as without the native
 * path. Before handing over it has written nothing (a speculative insertion
 * is taken back unseen) and locked at most the user row, which the SQL path
 * locks first too, so the hand-over is invisible.
 *
 * Invariant relied on throughout: whoever writes a key's version row holds
 * the key's user row first (locked, or inserted and not yet committed), in
 * the capture triggers, in SQL apply and here. Version rows are therefore
 * read without a row lock when the user row is held.
 *
 * All of it is C on purpose: every step calls PostgreSQL functions that may
 * raise, and a raise must never cross a Swift frame. The one decision that is
 * pure logic is Swift (mmlite_swift_apply_plan, ApplyPlan.swift), called
 * with plain values and returning before any further PostgreSQL call.
 */
#include "mmlite_pg.h"
#include "mmlite_compat.h"
#include "mmlite_contract.h"
#include "mmlite_tables.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_attribute.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

/* Implemented in Swift (Sources/MMLitePlugin/ApplyPlan.swift). */
extern int32 mmlite_swift_apply_plan(int32 op, bool user_row_found, bool version_found,
									 bool version_is_tombstone, bool built_on_local_version);

PG_FUNCTION_INFO_V1(mmlite_apply_change);

/*
 * Where columns were found last time, per attribute: a guess that is checked
 * (one name comparison) on every use and corrected when a table changed, so
 * that finding a column costs no search over the descriptor.
 */
typedef struct ColumnHints
{
	int		   *at;
	int			count;
} ColumnHints;

/* The change table's mm_* columns and the version table's columns (mmlite_contract.h: MMLITE_C_*, MMLITE_V_* are their positions). */
static const char *const change_meta_names[] = MMLITE_CHANGE_COLUMNS;
static const char *const versions_meta_names[] = MMLITE_VERSION_COLUMNS;

/* What a trigger's arguments name, resolved once per trigger (by its OID). */
typedef struct ApplyTarget
{
	Oid			trigger_oid;
	Oid			user_relid;
	Oid			versions_relid;
	FmgrInfo	fallback;
	char	   *me;
	ColumnHints change_meta;		/* change_meta_names in the change table */
	ColumnHints versions_meta;		/* versions_meta_names in the version table */
	ColumnHints user_from_change;	/* per user table attribute: its change table column */
	ColumnHints versions_from_change;	/* per version table attribute: its change table column */
	Oid			equality_index; /* the version key index `equality` was looked up for */
	FmgrInfo	equality[INDEX_MAX_KEYS];	/* its key columns' equality functions */
	struct ApplyTarget *next;
} ApplyTarget;

static ApplyTarget *apply_targets = NULL;

static ApplyTarget *
apply_target(Trigger *trigger)
{
	ApplyTarget *target;
	Oid			user_relid;
	Oid			versions_relid;
	Oid			fallback_oid;

	for (target = apply_targets; target != NULL; target = target->next)
		if (target->trigger_oid == trigger->tgoid)
			return target;

	if (trigger->tgnargs != MMLITE_APPLY_ARGUMENTS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mmlite.apply_change() needs %d trigger arguments (user table, version table, SQL apply function, node name), trigger \"%s\" has %d",
						MMLITE_APPLY_ARGUMENTS, trigger->tgname, trigger->tgnargs),
				 errhint("Re-install conflict handling with `mmlite apply`.")));
	user_relid = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(trigger->tgargs[0])));
	versions_relid = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(trigger->tgargs[1])));
	fallback_oid = DatumGetObjectId(DirectFunctionCall1(regprocedurein, CStringGetDatum(trigger->tgargs[2])));

	target = MemoryContextAllocZero(TopMemoryContext, sizeof(ApplyTarget));
	target->trigger_oid = trigger->tgoid;
	target->user_relid = user_relid;
	target->versions_relid = versions_relid;
	fmgr_info_cxt(fallback_oid, &target->fallback, TopMemoryContext);
	target->me = MemoryContextStrdup(TopMemoryContext, trigger->tgargs[3]);
	target->next = apply_targets;
	apply_targets = target;
	return target;
}

/* hints->at, with room for `count` attributes (new ones unknown: -1). */
static int *
hints_for(ColumnHints *hints, int count)
{
	if (hints->count < count)
	{
		int		   *grown = MemoryContextAlloc(TopMemoryContext, count * sizeof(int));

		for (int i = 0; i < count; i++)
			grown[i] = i < hints->count ? hints->at[i] : -1;
		if (hints->at != NULL)
			pfree(hints->at);
		hints->at = grown;
		hints->count = count;
	}
	return hints->at;
}

/* mmlite_column_index(desc, name), trying *hint first and remembering the answer there. */
static int
column_at(TupleDesc desc, const char *name, int *hint)
{
	if (*hint >= 0 && *hint < desc->natts)
	{
		Form_pg_attribute att = TupleDescAttr(desc, *hint);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return *hint;
	}
	*hint = mmlite_column_index(desc, name);
	return *hint;
}

static bool
texts_equal(Datum a, Datum b)
{
	text	   *ta = DatumGetTextPP(a);
	text	   *tb = DatumGetTextPP(b);

	return VARSIZE_ANY_EXHDR(ta) == VARSIZE_ANY_EXHDR(tb) &&
		memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), VARSIZE_ANY_EXHDR(ta)) == 0;
}

/* The op code (mmlite_contract.h) of an mm_op value; 0 for anything else. */
static int32
op_code(Datum value)
{
	if (mmlite_text_equals(value, MMLITE_OP_UPDATE_NAME))
		return MMLITE_OP_UPDATE;
	if (mmlite_text_equals(value, MMLITE_OP_INSERT_NAME))
		return MMLITE_OP_INSERT;
	if (mmlite_text_equals(value, MMLITE_OP_DELETE_NAME))
		return MMLITE_OP_DELETE;
	return 0;
}

/* slot (of rel) holding only rel's key columns, taken from the change. */
static TupleTableSlot *
key_slot(TupleTableSlot *slot, Relation rel, Bitmapset *key_columns, TupleDesc change_desc,
		 const Datum *change_values, const bool *change_nulls, ColumnHints *hints, bool *ok)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int		   *hint = hints_for(hints, desc->natts);

	ExecClearTuple(slot);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		int			from;

		slot->tts_values[i] = (Datum) 0;
		slot->tts_isnull[i] = true;
		if (att->attisdropped ||
			!bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, key_columns))
			continue;
		from = column_at(change_desc, NameStr(att->attname), &hint[i]);
		if (from < 0 || change_nulls[from] ||
			TupleDescAttr(change_desc, from)->atttypid != att->atttypid)
		{
			*ok = false;
			continue;
		}
		slot->tts_values[i] = change_values[from];
		slot->tts_isnull[i] = false;
	}
	ExecStoreVirtualTuple(slot);
	return slot;
}

/*
 * The two tables a change is applied to, opened, with an executor state and
 * the slots a change uses. Opened once per transaction and target and kept
 * until the transaction ends (a remote transaction is applied as one local
 * one: a bulk statement's 200k changes open them once, not 200k times); see
 * tables_for(). What is kept is what the executor keeps for a whole
 * statement, under the same locks (RowExclusiveLock until commit).
 */
typedef struct ApplyTables
{
	ApplyTarget *target;
	Relation	user_rel;
	Relation	versions_rel;
	Relation	versions_pk_rel;
	Bitmapset  *user_key;
	Bitmapset  *versions_key;
	Oid			user_pk;
	Oid			versions_pk;
	EState	   *estate;
	ResultRelInfo *rris;		/* [0] the user table, [1] the version table */
	bool		indexes_open;
	bool		kept;			/* in kept_tables, closed when the transaction ends */
	bool		stale;			/* a relcache invalidation named one of its tables: reopen */
	/* the slots of one change, cleared after it */
	TupleTableSlot *user_key_slot, *versions_key_slot, *user_found, *versions_found, *row, *version;
	/* version table columns */
	int			v_ms, v_counter, v_node, v_op, v_changed_at, v_prev_ms, v_prev_counter, v_prev_node, v_prev_op;
	struct ApplyTables *next;
} ApplyTables;

/* The arriving change row, deformed, with the positions of its mm_* columns. */
typedef struct Change
{
	TupleDesc	desc;
	Datum	   *values;
	bool	   *nulls;
	int32		op;
	int			node, op_column, v_ms, v_counter, prev_ms, prev_counter, prev_node;
} Change;

/*
 * Opens both tables and sets up an executor state for them, allocated in
 * `context`. NULL (nothing left open) when the native path cannot write this
 * table pair: no primary key, not a plain table, a version table of another
 * layout.
 */
static ApplyTables *
open_tables(ApplyTarget *target, MemoryContext context)
{
	MemoryContext caller = MemoryContextSwitchTo(context);
	ApplyTables *t = palloc0(sizeof(ApplyTables));
	TupleDesc	versions_desc;
	Relation	rels[2];

	t->target = target;
	t->user_rel = table_open(target->user_relid, RowExclusiveLock);
	t->versions_rel = table_open(target->versions_relid, RowExclusiveLock);
	versions_desc = RelationGetDescr(t->versions_rel);
	(void) RelationGetIndexList(t->user_rel);	/* sets rd_pkindex */
	(void) RelationGetIndexList(t->versions_rel);
	t->user_pk = t->user_rel->rd_pkindex;
	t->versions_pk = t->versions_rel->rd_pkindex;
	{
		int		   *hint = hints_for(&target->versions_meta, lengthof(versions_meta_names));
		int			at[lengthof(versions_meta_names)];

		for (int i = 0; i < (int) lengthof(versions_meta_names); i++)
			at[i] = column_at(versions_desc, versions_meta_names[i], &hint[i]);
		t->v_ms = at[MMLITE_V_MS];
		t->v_counter = at[MMLITE_V_COUNTER];
		t->v_node = at[MMLITE_V_NODE];
		t->v_op = at[MMLITE_V_OP];
		t->v_changed_at = at[MMLITE_V_CHANGED_AT];
		t->v_prev_ms = at[MMLITE_V_PREV_MS];
		t->v_prev_counter = at[MMLITE_V_PREV_COUNTER];
		t->v_prev_node = at[MMLITE_V_PREV_NODE];
		t->v_prev_op = at[MMLITE_V_PREV_OP];
	}
	if (!OidIsValid(t->user_pk) || !OidIsValid(t->versions_pk) ||
		t->user_rel->rd_rel->relkind != RELKIND_RELATION ||
		t->versions_rel->rd_rel->relkind != RELKIND_RELATION ||
		t->v_ms < 0 || t->v_counter < 0 || t->v_node < 0 || t->v_op < 0 || t->v_changed_at < 0 ||
		t->v_prev_ms < 0 || t->v_prev_counter < 0 || t->v_prev_node < 0 || t->v_prev_op < 0)
	{
		table_close(t->versions_rel, NoLock);
		table_close(t->user_rel, NoLock);
		pfree(t);
		MemoryContextSwitchTo(caller);
		return NULL;
	}
	t->versions_pk_rel = index_open(t->versions_pk, RowExclusiveLock);
	t->user_key = RelationGetIndexAttrBitmap(t->user_rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	t->versions_key = RelationGetIndexAttrBitmap(t->versions_rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);

	t->estate = CreateExecutorState();
	rels[0] = t->user_rel;
	rels[1] = t->versions_rel;
	MemoryContextSwitchTo(t->estate->es_query_cxt);
	mmlite_init_range_table(t->estate, rels, 2);
	t->rris = palloc0(2 * sizeof(ResultRelInfo));
	InitResultRelInfo(&t->rris[0], t->user_rel, 1, NULL, 0);
	InitResultRelInfo(&t->rris[1], t->versions_rel, 2, NULL, 0);
	mmlite_add_result_relations(t->estate, t->rris, 2);
	t->user_key_slot = table_slot_create(t->user_rel, &t->estate->es_tupleTable);
	t->user_found = table_slot_create(t->user_rel, &t->estate->es_tupleTable);
	t->row = table_slot_create(t->user_rel, &t->estate->es_tupleTable);
	t->versions_key_slot = table_slot_create(t->versions_rel, &t->estate->es_tupleTable);
	t->versions_found = table_slot_create(t->versions_rel, &t->estate->es_tupleTable);
	t->version = table_slot_create(t->versions_rel, &t->estate->es_tupleTable);
	MemoryContextSwitchTo(caller);
	return t;
}

/*
 * Indexes, for writing, opened with their unique-check support (what a
 * speculative insertion needs; plain inserts and updates do not use it).
 */
static void
open_indexes(ApplyTables *t)
{
	MemoryContext caller;

	if (t->indexes_open)
		return;
	caller = MemoryContextSwitchTo(t->estate->es_query_cxt);
	ExecOpenIndices(&t->rris[0], true);
	ExecOpenIndices(&t->rris[1], true);
	t->indexes_open = true;
	MemoryContextSwitchTo(caller);
}

static void
close_tables(ApplyTables *t)
{
	if (t->indexes_open)
	{
		ExecCloseIndices(&t->rris[1]);
		ExecCloseIndices(&t->rris[0]);
	}
	ExecResetTupleTable(t->estate->es_tupleTable, false);
	FreeExecutorState(t->estate);
	index_close(t->versions_pk_rel, NoLock);
	table_close(t->versions_rel, NoLock);
	table_close(t->user_rel, NoLock);
	pfree(t);
}

/*
 * The tables kept open in the current top-level transaction (allocated in
 * TopTransactionContext). Closed just before it commits or prepares; on
 * abort the resource owner has released them and their memory is gone, so
 * they are only forgotten. Kept only in background workers (the apply
 * workers run a remote transaction without portals, under the transaction's
 * resource owner): in a session that fires the trigger itself
 * (session_replication_role = replica) each statement's portal owns what it
 * opens and releases it when the statement ends. Inside
 * a subtransaction (parallel apply's savepoints, 16+) nothing is kept: a
 * subtransaction's abort would release what it opened under a kept set.
 */
static ApplyTables *kept_tables = NULL;
static bool apply_callbacks_registered = false;

static void
close_kept_tables(void)
{
	while (kept_tables != NULL)
	{
		ApplyTables *t = kept_tables;

		kept_tables = t->next;
		close_tables(t);
	}
}

static void
apply_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_PRE_COMMIT:
		case XACT_EVENT_PARALLEL_PRE_COMMIT:
		case XACT_EVENT_PRE_PREPARE:
			close_kept_tables();
			break;
		default:
			kept_tables = NULL;
			break;
	}
}

/* A table changed (or everything, InvalidOid): reopen before the next change. */
static void
apply_relcache_callback(Datum arg, Oid relid)
{
	for (ApplyTables *t = kept_tables; t != NULL; t = t->next)
		if (!OidIsValid(relid) || relid == t->target->user_relid || relid == t->target->versions_relid)
			t->stale = true;
}

/* The open tables for target's change: kept ones at top level, else fresh (release_tables closes them). */
static ApplyTables *
tables_for(ApplyTarget *target)
{
	ApplyTables **link;
	ApplyTables *t;

	if (!mmlite_is_background_worker() || GetCurrentTransactionNestLevel() != 1)
		return open_tables(target, CurrentMemoryContext);
	if (!apply_callbacks_registered)
	{
		RegisterXactCallback(apply_xact_callback, NULL);
		CacheRegisterRelcacheCallback(apply_relcache_callback, (Datum) 0);
		apply_callbacks_registered = true;
	}
	for (link = &kept_tables; *link != NULL; link = &(*link)->next)
	{
		t = *link;
		if (t->target != target)
			continue;
		if (!t->stale)
			return t;
		*link = t->next;
		close_tables(t);
		break;
	}
	t = open_tables(target, TopTransactionContext);
	if (t != NULL)
	{
		t->kept = true;
		t->next = kept_tables;
		kept_tables = t;
	}
	return t;
}

/* After a change: slots cleared (no buffer pins held between changes), fresh tables closed. */
static void
release_tables(ApplyTables *t)
{
	if (!t->kept)
	{
		close_tables(t);
		return;
	}
	ExecClearTuple(t->user_key_slot);
	ExecClearTuple(t->user_found);
	ExecClearTuple(t->row);
	ExecClearTuple(t->versions_key_slot);
	ExecClearTuple(t->versions_found);
	ExecClearTuple(t->version);
	ResetPerTupleExprContext(t->estate);
}

/*
 * The version row the change writes: the change's version, on top of
 * `replaced` (the local version row, kept as prev_*) or, for a key without
 * one, of `key` (a slot holding the key columns).
 */
static TupleTableSlot *
version_slot(ApplyTables *t, const Change *c, TupleTableSlot *replaced, TupleTableSlot *key)
{
	TupleDesc	desc = RelationGetDescr(t->versions_rel);
	TupleTableSlot *slot = t->version;
	TupleTableSlot *from = replaced != NULL ? replaced : key;

	ExecClearTuple(slot);
	memcpy(slot->tts_values, from->tts_values, desc->natts * sizeof(Datum));
	memcpy(slot->tts_isnull, from->tts_isnull, desc->natts * sizeof(bool));
	if (replaced != NULL)
	{
		slot->tts_values[t->v_prev_ms] = replaced->tts_values[t->v_ms];
		slot->tts_isnull[t->v_prev_ms] = replaced->tts_isnull[t->v_ms];
		slot->tts_values[t->v_prev_counter] = replaced->tts_values[t->v_counter];
		slot->tts_isnull[t->v_prev_counter] = replaced->tts_isnull[t->v_counter];
		slot->tts_values[t->v_prev_node] = replaced->tts_values[t->v_node];
		slot->tts_isnull[t->v_prev_node] = replaced->tts_isnull[t->v_node];
		slot->tts_values[t->v_prev_op] = replaced->tts_values[t->v_op];
		slot->tts_isnull[t->v_prev_op] = replaced->tts_isnull[t->v_op];
	}
	slot->tts_values[t->v_ms] = c->values[c->v_ms];
	slot->tts_isnull[t->v_ms] = false;
	slot->tts_values[t->v_counter] = c->values[c->v_counter];
	slot->tts_isnull[t->v_counter] = false;
	slot->tts_values[t->v_node] = c->values[c->node];
	slot->tts_isnull[t->v_node] = false;
	slot->tts_values[t->v_op] = c->values[c->op_column];
	slot->tts_isnull[t->v_op] = false;
	slot->tts_values[t->v_changed_at] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	slot->tts_isnull[t->v_changed_at] = false;
	ExecStoreVirtualTuple(slot);
	return slot;
}

/*
 * The user row the change writes: every writable column from the change,
 * over `base` (the existing row; its key columns are kept) or, for a new row,
 * with the key from the change too. False when the change table lacks a
 * column or has it with another type (the SQL function converts).
 */
static bool
row_slot(ApplyTables *t, const Change *c, TupleTableSlot *base, TupleTableSlot **out)
{
	TupleDesc	desc = RelationGetDescr(t->user_rel);
	TupleTableSlot *slot = t->row;
	int		   *hint = hints_for(&t->target->user_from_change, desc->natts);
	bool		ok = true;

	ExecClearTuple(slot);
	if (base != NULL)
	{
		slot_getallattrs(base);
		memcpy(slot->tts_values, base->tts_values, desc->natts * sizeof(Datum));
		memcpy(slot->tts_isnull, base->tts_isnull, desc->natts * sizeof(bool));
	}
	else
	{
		memset(slot->tts_values, 0, desc->natts * sizeof(Datum));
		memset(slot->tts_isnull, true, desc->natts * sizeof(bool));
	}
	for (int i = 0; i < desc->natts && ok; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		int			from;

		if (att->attisdropped || att->attgenerated != '\0' ||
			(base != NULL && (att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS ||
							  bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, t->user_key))))
			continue;
		from = column_at(c->desc, NameStr(att->attname), &hint[i]);
		if (from < 0 || TupleDescAttr(c->desc, from)->atttypid != att->atttypid)
			ok = false;
		else
		{
			slot->tts_values[i] = c->values[from];
			slot->tts_isnull[i] = c->nulls[from];
		}
	}
	ExecStoreVirtualTuple(slot);
	*out = slot;
	return ok;
}

/*
 * Inserts slot into rri's table as a speculative insertion under `token`
 * (the mechanism of INSERT ... ON CONFLICT): the tuple and its index entries,
 * not yet confirmed. Returns false when the primary key exists or another
 * transaction is inserting it. Either way the caller ends the insertion with
 * table_tuple_complete_speculative: confirmed, or taken back ("super-deleted",
 * never seen by anyone). Unlike ON CONFLICT nothing here waits for an insert
 * in flight: the SQL function the caller hands a conflict to does. *recheck:
 * the indexes whose AFTER ROW triggers need it (ExecARInsertTriggers).
 */
static bool
insert_speculative(EState *estate, ResultRelInfo *rri, TupleTableSlot *slot, Oid pk, uint32 token,
				   List **recheck)
{
	Relation	rel = rri->ri_RelationDesc;
	bool		conflict = false;

	if (rel->rd_att->constr)
		ExecConstraints(rri, slot, estate);
	if (rel->rd_rel->relispartition)
		ExecPartitionCheck(rri, slot, estate, true);
	table_tuple_insert_speculative(rel, slot, estate->es_output_cid, 0, NULL, token);
	*recheck = mmlite_insert_index_tuples_speculative(estate, rri, slot, &conflict, list_make1_oid(pk));
	return !conflict;
}

/*
 * An insert: the row and its version, as two speculative insertions under
 * one token, confirmed together when neither key existed. A key with a row
 * (insert/insert) or with a version (a tombstone, or a version another apply
 * worker is writing) takes both back and leaves the change to SQL, having
 * written nothing: no separate look-up first, the insertions are the check.
 * The row goes first, as everywhere: who writes a version holds its row.
 */
static bool
apply_insert(ApplyTables *t, const Change *c, TupleTableSlot *versions_key)
{
	TriggerDesc *triggers = t->rris[0].ri_TrigDesc;
	TupleTableSlot *row;
	TupleTableSlot *version;
	List	   *row_recheck = NIL;
	List	   *version_recheck = NIL;
	TransactionId xid;
	uint32		token;
	bool		row_free;
	bool		version_free = false;
	bool		applied;

	/* BEFORE ROW triggers may change or skip the row, and stored generated columns need computing: SQL does both. */
	if ((triggers != NULL && triggers->trig_insert_before_row) ||
		(t->user_rel->rd_att->constr != NULL && t->user_rel->rd_att->constr->has_generated_stored))
		return false;
	if (!row_slot(t, c, NULL, &row))
		return false;
	version = version_slot(t, c, NULL, versions_key);
	open_indexes(t);

	xid = GetCurrentTransactionId();
	token = SpeculativeInsertionLockAcquire(xid);
	row_free = insert_speculative(t->estate, &t->rris[0], row, t->user_pk, token, &row_recheck);
	if (row_free)
		version_free = insert_speculative(t->estate, &t->rris[1], version, t->versions_pk, token, &version_recheck);
	applied = mmlite_swift_apply_plan(c->op, !row_free, row_free && !version_free, false, false) == MMLITE_PLAN_APPLY;
	table_tuple_complete_speculative(t->user_rel, row, token, applied);
	if (row_free)
		table_tuple_complete_speculative(t->versions_rel, version, token, applied);
	SpeculativeInsertionLockRelease(xid);
	if (applied)
	{
		AfterTriggerBeginQuery();
		ExecARInsertTriggers(t->estate, &t->rris[0], row, row_recheck, NULL);
		ExecARInsertTriggers(t->estate, &t->rris[1], version, version_recheck, NULL);
		AfterTriggerEndQuery(t->estate);
	}
	list_free(row_recheck);
	list_free(version_recheck);
	return applied;
}

typedef enum VersionLookup
{
	VERSION_NONE,
	VERSION_FOUND,
	VERSION_BUSY				/* inserted, updated or deleted by a transaction in progress */
} VersionLookup;

/*
 * The version row of `key` into `out`, read without locking it: whoever
 * writes a version row holds the key's user row first (locked, or inserted
 * by it and not yet committed), and the caller holds that row locked, so
 * the version cannot change under it. A version row some other transaction
 * is writing anyway (BUSY) goes to SQL, which waits for it. This saves the
 * row lock (a WAL record and a dirtied page) that RelationFindReplTupleByIndex
 * takes, and its per-call operator look-ups (mmlite_key_equality caches them).
 */
static VersionLookup
find_version(ApplyTables *t, TupleTableSlot *key, TupleTableSlot *out)
{
	Relation	index = t->versions_pk_rel;
	int			nkeys = IndexRelationGetNumberOfKeyAttributes(index);
	FmgrInfo   *equality = t->target->equality;
	ScanKeyData scankeys[INDEX_MAX_KEYS];
	SnapshotData dirty;
	IndexScanDesc scan;
	VersionLookup result = VERSION_NONE;

	mmlite_key_equality(index, &t->target->equality_index, equality);

	for (int i = 0; i < nkeys; i++)
	{
		AttrNumber	attnum = index->rd_index->indkey.values[i];

		ScanKeyEntryInitializeWithInfo(&scankeys[i], 0, i + 1, BTEqualStrategyNumber, InvalidOid,
									   index->rd_indcollation[i], &equality[i], key->tts_values[attnum - 1]);
	}
	InitDirtySnapshot(dirty);
	scan = mmlite_index_beginscan(t->versions_rel, index, &dirty, nkeys);
	index_rescan(scan, scankeys, nkeys, NULL, 0);
	if (index_getnext_slot(scan, ForwardScanDirection, out))
	{
		if (TransactionIdIsValid(dirty.xmin) || TransactionIdIsValid(dirty.xmax))
			result = VERSION_BUSY;
		else
		{
			ExecMaterializeSlot(out);
			result = VERSION_FOUND;
		}
	}
	index_endscan(scan);
	return result;
}

/*
 * An update or delete: direct when the row exists and the change was
 * written on top of the local version (or the key has none). Returns true
 * when applied; false when the SQL function must decide, with nothing
 * written (the user row it locked, SQL locks first too).
 */
static bool
apply_update_or_delete(ApplyTables *t, const Change *c, TupleTableSlot *user_key, TupleTableSlot *versions_key)
{
	TupleTableSlot *user_found = t->user_found;
	TupleTableSlot *versions_found = t->versions_found;
	TupleTableSlot *version;
	TupleTableSlot *row = NULL;
	EPQState	epq;
	bool		user_row_found;
	bool		version_found = false;
	bool		tombstone = false;
	bool		built_on_local = false;

	/* The user row first, locked: whoever writes this key's version holds it too (see find_version). */
	user_row_found = RelationFindReplTupleByIndex(t->user_rel, t->user_pk, LockTupleExclusive, user_key, user_found);
	if (user_row_found)
	{
		VersionLookup lookup = find_version(t, versions_key, versions_found);

		/* Someone else writing this version (it holds no lock on our row): SQL waits for it. */
		if (lookup == VERSION_BUSY)
			return false;
		version_found = lookup == VERSION_FOUND;
		if (version_found)
		{
			slot_getallattrs(versions_found);
			tombstone = versions_found->tts_isnull[t->v_op] ||
				mmlite_text_equals(versions_found->tts_values[t->v_op], MMLITE_OP_DELETE_NAME);
			built_on_local = !c->nulls[c->prev_ms] && !c->nulls[c->prev_counter] && !c->nulls[c->prev_node] &&
				!versions_found->tts_isnull[t->v_ms] && !versions_found->tts_isnull[t->v_counter] &&
				!versions_found->tts_isnull[t->v_node] &&
				DatumGetInt64(c->values[c->prev_ms]) == DatumGetInt64(versions_found->tts_values[t->v_ms]) &&
				DatumGetInt32(c->values[c->prev_counter]) == DatumGetInt32(versions_found->tts_values[t->v_counter]) &&
				texts_equal(c->values[c->prev_node], versions_found->tts_values[t->v_node]);
		}
	}
	if (mmlite_swift_apply_plan(c->op, user_row_found, version_found, tombstone, built_on_local) != MMLITE_PLAN_APPLY)
		return false;
	/* A column the change table lacks (or types differ): nothing written yet. */
	if (c->op != MMLITE_OP_DELETE && !row_slot(t, c, user_found, &row))
		return false;

	version = version_slot(t, c, version_found ? versions_found : NULL, versions_key);
	open_indexes(t);
	mmlite_epq_init(&epq, t->estate);
	AfterTriggerBeginQuery();
	if (version_found)
		mmlite_simple_update(t->estate, &t->rris[1], &epq, versions_found, version);
	else
		mmlite_simple_insert(t->estate, &t->rris[1], version);
	if (c->op == MMLITE_OP_DELETE)
		mmlite_simple_delete(t->estate, &t->rris[0], &epq, user_found);
	else
		mmlite_simple_update(t->estate, &t->rris[0], &epq, user_found, row);
	AfterTriggerEndQuery(t->estate);
	EvalPlanQualEnd(&epq);
	return true;
}

Datum
mmlite_apply_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	ApplyTarget *target;
	Change		c;
	ApplyTables *t;
	TupleTableSlot *user_key;
	TupleTableSlot *versions_key;
	bool		keys_ok = true;
	bool		applied;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mmlite.apply_change() must be fired BEFORE INSERT FOR EACH ROW")));

	target = apply_target(trigdata->tg_trigger);

	/* The arriving change row. */
	c.desc = RelationGetDescr(trigdata->tg_relation);
	c.values = palloc(c.desc->natts * sizeof(Datum));
	c.nulls = palloc(c.desc->natts * sizeof(bool));
	heap_deform_tuple(trigdata->tg_trigtuple, c.desc, c.values, c.nulls);
	{
		int		   *hint = hints_for(&target->change_meta, lengthof(change_meta_names));
		int			at[lengthof(change_meta_names)];

		for (int i = 0; i < (int) lengthof(change_meta_names); i++)
			at[i] = column_at(c.desc, change_meta_names[i], &hint[i]);
		c.node = at[MMLITE_C_NODE];
		c.op_column = at[MMLITE_C_OP];
		c.v_ms = at[MMLITE_C_V_MS];
		c.v_counter = at[MMLITE_C_V_COUNTER];
		c.prev_ms = at[MMLITE_C_PREV_MS];
		c.prev_counter = at[MMLITE_C_PREV_COUNTER];
		c.prev_node = at[MMLITE_C_PREV_NODE];
	}
	if (c.node < 0 || c.op_column < 0 || c.v_ms < 0 || c.v_counter < 0 || c.prev_ms < 0 ||
		c.prev_counter < 0 || c.prev_node < 0 || c.nulls[c.node] || c.nulls[c.op_column] ||
		c.nulls[c.v_ms] || c.nulls[c.v_counter])
		return mmlite_call_trigger_function(&target->fallback, fcinfo);
	/* This node's own change coming back: never applied (as in SQL). */
	if (mmlite_text_equals(c.values[c.node], target->me))
		PG_RETURN_POINTER(NULL);
	c.op = op_code(c.values[c.op_column]);
	/* An op this build does not know (a newer change table): SQL decides. */
	if (c.op == 0 || (t = tables_for(target)) == NULL)
		return mmlite_call_trigger_function(&target->fallback, fcinfo);
	/* The apply worker counts commands up between changes. */
	t->estate->es_output_cid = GetCurrentCommandId(true);

	user_key = key_slot(t->user_key_slot, t->user_rel, t->user_key, c.desc, c.values, c.nulls, &target->user_from_change, &keys_ok);
	versions_key = key_slot(t->versions_key_slot, t->versions_rel, t->versions_key, c.desc, c.values, c.nulls, &target->versions_from_change, &keys_ok);
	if (!keys_ok)
		applied = false;
	else if (c.op == MMLITE_OP_INSERT)
		applied = apply_insert(t, &c, versions_key);
	else
		applied = apply_update_or_delete(t, &c, user_key, versions_key);
	release_tables(t);
	if (!applied)
		return mmlite_call_trigger_function(&target->fallback, fcinfo);
	PG_RETURN_POINTER(NULL);
}
