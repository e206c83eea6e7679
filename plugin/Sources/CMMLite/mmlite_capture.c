/*
 * mmlite.capture_change(): the native capture trigger for conflict handling
 * (docs/conflicts.md, "Native capture").
 *
 * Installed by `mmlite apply`, for tables without delta columns, as
 *   CREATE TRIGGER mmlite_capture_{ins,upd,del} AFTER {INSERT,UPDATE,DELETE} ON s.t
 *       REFERENCING {NEW,OLD} TABLE AS ... FOR EACH STATEMENT
 *       EXECUTE FUNCTION mmlite.capture_change(
 *           'version table', 'change table', 'SQL capture function()', 'this node',
 *           'column', 'column', ...);
 * the trailing arguments being the table's writable columns as installed. It
 * does what the generated plpgsql capture function does, row by row with the
 * executor's simple-relation API: for every row the statement wrote, a new
 * version of its key (hybrid logical clock: above the version it replaces)
 * written to the version table, and a change row appended to the change
 * table, or, where every decoder of this database translates them, sent as a
 * change message instead (mmlite_change_message.c). No SQL statement, no
 * plan, no plpgsql.
 *
 * Everything it does not do itself goes, whole, to the plpgsql function,
 * called on the same trigger call (it sees the same transition tables), before
 * anything was written: an UPDATE that changes a key (set-wise: a key can
 * move to another row of the same statement), columns that are not the ones
 * the triggers were installed for (the SQL function then fails as it always
 * did, naming the column), a change table of another layout.
 *
 * Invariant kept (mmlite_apply.c relies on it): whoever writes a key's version
 * row holds the key's user row first. Here the statement that fired the
 * trigger holds every row it wrote.
 *
 * C on purpose: every step calls PostgreSQL functions that may raise. The
 * clock rule is Swift (mmlite_swift_next_version, Capture.swift), called with
 * plain values.
 */
#include "mmlite_pg.h"
#include "mmlite_compat.h"
#include "mmlite_contract.h"
#include "mmlite_tables.h"
#include "mmlite_change_message.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "miscadmin.h"
#include "nodes/execnodes.h"
#include "optimizer/optimizer.h"
#include "rewrite/rewriteHandler.h"
#include "storage/lmgr.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

/* Implemented in Swift (Sources/MMLitePlugin/Capture.swift). */
extern bool mmlite_swift_next_version(int64 now_ms, bool replaces, int64 replaced_ms, int32 replaced_counter,
									  int64 *ms, int32 *counter);

PG_FUNCTION_INFO_V1(mmlite_capture_change);

static const char *const change_meta_names[] = MMLITE_CHANGE_COLUMNS;
static const char *const versions_meta_names[] = MMLITE_VERSION_COLUMNS;

/* What a trigger's arguments name, resolved once per trigger (by its OID). */
typedef struct CaptureTarget
{
	Oid			trigger_oid;
	Oid			versions_relid;
	Oid			changes_relid;
	FmgrInfo	fallback;
	char	   *me;
	int			ncolumns;
	char	  **columns;		/* the writable columns the triggers were installed for */
	Oid			equality_index;
	FmgrInfo	equality[INDEX_MAX_KEYS];
	/* The change columns nothing sets (mm_id) and their planned defaults, found once. */
	bool		defaults_known;
	int			ndefaults;
	char	  **default_name;
	int		   *default_at;
	Expr	  **default_expr;
	struct CaptureTarget *next;
} CaptureTarget;

static CaptureTarget *capture_targets = NULL;


static CaptureTarget *
capture_target(Trigger *trigger)
{
	CaptureTarget *target;
	Oid			fallback_oid;

	for (target = capture_targets; target != NULL; target = target->next)
		if (target->trigger_oid == trigger->tgoid)
			return target;

	if (trigger->tgnargs < MMLITE_CAPTURE_ARGUMENTS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mmlite.capture_change() needs at least %d trigger arguments (version table, change table, SQL capture function, node name, columns), trigger \"%s\" has %d",
						MMLITE_CAPTURE_ARGUMENTS, trigger->tgname, trigger->tgnargs),
				 errhint("Re-install conflict handling with `mmlite apply`.")));
	fallback_oid = DatumGetObjectId(DirectFunctionCall1(regprocedurein, CStringGetDatum(trigger->tgargs[2])));
	target = MemoryContextAllocZero(TopMemoryContext, sizeof(CaptureTarget));
	target->trigger_oid = trigger->tgoid;
	target->versions_relid = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(trigger->tgargs[0])));
	target->changes_relid = DatumGetObjectId(DirectFunctionCall1(regclassin, CStringGetDatum(trigger->tgargs[1])));
	fmgr_info_cxt(fallback_oid, &target->fallback, TopMemoryContext);
	target->me = MemoryContextStrdup(TopMemoryContext, trigger->tgargs[3]);
	target->ncolumns = trigger->tgnargs - MMLITE_CAPTURE_ARGUMENTS;
	target->columns = MemoryContextAlloc(TopMemoryContext, Max(target->ncolumns, 1) * sizeof(char *));
	for (int i = 0; i < target->ncolumns; i++)
		target->columns[i] = MemoryContextStrdup(TopMemoryContext, trigger->tgargs[MMLITE_CAPTURE_ARGUMENTS + i]);
	target->next = capture_targets;
	capture_targets = target;
	return target;
}

/*
 * Everything one statement's capture needs: the two tables opened, an
 * executor state, and where each column goes.
 */
typedef struct Capture
{
	CaptureTarget *target;
	Relation	user_rel;
	Relation	versions_rel;
	Relation	changes_rel;
	EState	   *estate;
	ResultRelInfo *rris;		/* [0] the version table, [1] the change table */
	Oid			versions_pk;
	int			nkeys;
	int			user_key[INDEX_MAX_KEYS];	/* per version key column: its user column */
	int			versions_key[INDEX_MAX_KEYS];	/* per version key column: its version column */
	int			v[lengthof(versions_meta_names)];	/* version table: versions_meta_names */
	int			c[lengthof(change_meta_names)];	/* change table: change_meta_names */
	int		   *change_from_user;	/* per change column: the user column it copies, or -1 */
	bool	   *change_is_key;	/* per change column: a key column (kept in a delete's change row) */
	ExprState **default_state;	/* per target->default_expr */
	Datum		me_text;		/* target->me as text */
	/* One index scan of the version key for the whole statement, rescanned per row. */
	Relation	versions_index;
	SnapshotData dirty;
	IndexScanDesc scan;
	ScanKeyData scankeys[INDEX_MAX_KEYS];
	MemoryContext scan_context;	/* the scan's: it keeps allocations across rows (btree's killed items) */
	bool		messages;		/* change rows go as change messages, not into the change table */
} Capture;


/*
 * True when the user table's writable columns are exactly the ones the
 * triggers were installed for (else the SQL function, which names them,
 * fails or leaves new ones out, exactly as without the native path).
 */
static bool
columns_as_installed(CaptureTarget *target, TupleDesc user_desc)
{
	int			seen = 0;

	for (int i = 0; i < user_desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(user_desc, i);

		if (att->attisdropped || att->attgenerated != '\0')
			continue;
		if (seen >= target->ncolumns || strcmp(NameStr(att->attname), target->columns[seen]) != 0)
			return false;
		seen++;
	}
	return seen == target->ncolumns;
}

static void
close_capture(Capture *k)
{
	index_endscan(k->scan);
	index_close(k->versions_index, NoLock);
	ExecCloseIndices(&k->rris[1]);
	ExecCloseIndices(&k->rris[0]);
	ExecResetTupleTable(k->estate->es_tupleTable, false);
	FreeExecutorState(k->estate);
	table_close(k->changes_rel, NoLock);
	table_close(k->versions_rel, NoLock);
}

/*
 * Whether the writing role may write the two tables as the SQL function
 * would (which, if not, fails and says which privilege is missing).
 */
static bool
may_write(CaptureTarget *target)
{
	Oid			role = GetUserId();

	return mmlite_schema_allows(get_rel_namespace(target->changes_relid), role, ACL_USAGE) &&
		mmlite_schema_allows(get_rel_namespace(target->versions_relid), role, ACL_USAGE) &&
		pg_class_aclcheck(target->versions_relid, role, ACL_SELECT | ACL_INSERT | ACL_UPDATE) == ACLCHECK_OK &&
		pg_class_aclcheck(target->changes_relid, role, ACL_INSERT) == ACLCHECK_OK;
}

/* Whether target's defaults were found for this change table layout. */
static bool
defaults_as_known(CaptureTarget *target, TupleDesc change_desc)
{
	if (!target->defaults_known)
		return false;
	for (int i = 0; i < target->ndefaults; i++)
	{
		int			at = target->default_at[i];

		if (at >= change_desc->natts || TupleDescAttr(change_desc, at)->attisdropped ||
			strcmp(NameStr(TupleDescAttr(change_desc, at)->attname), target->default_name[i]) != 0)
			return false;
	}
	return true;
}

/*
 * The change columns nothing sets, with their planned default expressions,
 * kept with the target: building an identity column's default reads
 * pg_depend, too slow for every statement.
 */
static void
find_defaults(CaptureTarget *target, Capture *k)
{
	TupleDesc	change_desc = RelationGetDescr(k->changes_rel);
	MemoryContext caller = MemoryContextSwitchTo(TopMemoryContext);

	target->ndefaults = 0;
	target->default_name = palloc(Max(change_desc->natts, 1) * sizeof(char *));
	target->default_at = palloc(Max(change_desc->natts, 1) * sizeof(int));
	target->default_expr = palloc(Max(change_desc->natts, 1) * sizeof(Expr *));
	for (int i = 0; i < change_desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(change_desc, i);
		bool		set = k->change_from_user[i] >= 0;
		Node	   *expr;

		for (int j = 0; j < (int) lengthof(change_meta_names); j++)
			set = set || k->c[j] == i;
		if (set || att->attisdropped || att->attgenerated != '\0')
			continue;
		expr = build_column_default(k->changes_rel, att->attnum);
		if (expr == NULL)
			continue;
		target->default_name[target->ndefaults] = pstrdup(NameStr(att->attname));
		target->default_at[target->ndefaults] = i;
		target->default_expr[target->ndefaults] = expression_planner((Expr *) expr);
		target->ndefaults++;
	}
	target->defaults_known = true;
	MemoryContextSwitchTo(caller);
}

/*
 * Opens the version and change tables and maps every column. False (nothing
 * left open) when their layout is not the one this build writes.
 */
static bool
open_capture(CaptureTarget *target, Relation user_rel, Capture *k)
{
	TupleDesc	user_desc = RelationGetDescr(user_rel);
	TupleDesc	versions_desc;
	TupleDesc	change_desc;
	Relation	rels[2];
	Relation	index;
	bool		ok = true;

	memset(k, 0, sizeof(*k));
	k->target = target;
	k->user_rel = user_rel;
	k->versions_rel = table_open(target->versions_relid, RowExclusiveLock);
	k->changes_rel = table_open(target->changes_relid, RowExclusiveLock);
	versions_desc = RelationGetDescr(k->versions_rel);
	change_desc = RelationGetDescr(k->changes_rel);
	(void) RelationGetIndexList(k->versions_rel);	/* sets rd_pkindex */
	k->versions_pk = k->versions_rel->rd_pkindex;
	if (!OidIsValid(k->versions_pk) ||
		k->versions_rel->rd_rel->relkind != RELKIND_RELATION ||
		k->changes_rel->rd_rel->relkind != RELKIND_RELATION)
		ok = false;
	for (int i = 0; ok && i < (int) lengthof(versions_meta_names); i++)
		ok = (k->v[i] = mmlite_column_index(versions_desc, versions_meta_names[i])) >= 0;
	for (int i = 0; ok && i < (int) lengthof(change_meta_names); i++)
		ok = (k->c[i] = mmlite_column_index(change_desc, change_meta_names[i])) >= 0;
	/* The version key: the user's key columns, by name, of the same types. */
	if (ok)
	{
		index = index_open(k->versions_pk, AccessShareLock);
		k->nkeys = IndexRelationGetNumberOfKeyAttributes(index);
		for (int i = 0; ok && i < k->nkeys; i++)
		{
			AttrNumber	attnum = index->rd_index->indkey.values[i];
			Form_pg_attribute att = attnum > 0 ? TupleDescAttr(versions_desc, attnum - 1) : NULL;
			int			from = att != NULL ? mmlite_column_index(user_desc, NameStr(att->attname)) : -1;

			ok = from >= 0 && TupleDescAttr(user_desc, from)->atttypid == att->atttypid;
			k->versions_key[i] = attnum - 1;
			k->user_key[i] = from;
		}
		index_close(index, AccessShareLock);
	}
	/* The change table: the installed columns, with the user table's types; the rest by default. */
	if (ok)
	{
		k->change_from_user = palloc(change_desc->natts * sizeof(int));
		k->change_is_key = palloc0(change_desc->natts * sizeof(bool));
		for (int i = 0; i < change_desc->natts; i++)
			k->change_from_user[i] = -1;
		for (int i = 0; ok && i < target->ncolumns; i++)
		{
			int			to = mmlite_column_index(change_desc, target->columns[i]);
			int			from = mmlite_column_index(user_desc, target->columns[i]);

			ok = to >= 0 && from >= 0 && TupleDescAttr(change_desc, to)->atttypid == TupleDescAttr(user_desc, from)->atttypid;
			if (ok)
			{
				k->change_from_user[to] = from;
				for (int j = 0; j < k->nkeys; j++)
					if (k->user_key[j] == from)
						k->change_is_key[to] = true;
			}
		}
	}
	if (!ok)
	{
		table_close(k->changes_rel, NoLock);
		table_close(k->versions_rel, NoLock);
		return false;
	}

	k->estate = CreateExecutorState();
	rels[0] = k->versions_rel;
	rels[1] = k->changes_rel;
	mmlite_init_range_table(k->estate, rels, 2);
	k->rris = palloc0(2 * sizeof(ResultRelInfo));
	InitResultRelInfo(&k->rris[0], k->versions_rel, 1, NULL, 0);
	InitResultRelInfo(&k->rris[1], k->changes_rel, 2, NULL, 0);
	mmlite_add_result_relations(k->estate, k->rris, 2);
	k->estate->es_output_cid = GetCurrentCommandId(true);
	k->me_text = CStringGetTextDatum(target->me);
	ExecOpenIndices(&k->rris[0], false);
	k->messages = mmlite_change_messages_decoded();
	if (!k->messages)
		ExecOpenIndices(&k->rris[1], false);

	k->versions_index = index_open(k->versions_pk, RowExclusiveLock);
	{
		FmgrInfo   *equality = target->equality;

		mmlite_key_equality(k->versions_index, &target->equality_index, equality);

		for (int i = 0; i < k->nkeys; i++)
			ScanKeyEntryInitializeWithInfo(&k->scankeys[i], 0, i + 1, BTEqualStrategyNumber, InvalidOid,
										   k->versions_index->rd_indcollation[i], &equality[i], (Datum) 0);
	}
	InitDirtySnapshot(k->dirty);
	k->scan_context = CurrentMemoryContext;
	k->scan = mmlite_index_beginscan(k->versions_rel, k->versions_index, &k->dirty, k->nkeys);

	/* Change columns nothing sets (mm_id) get their default, as in INSERT. */
	if (!defaults_as_known(target, change_desc))
		find_defaults(target, k);
	k->default_state = palloc(Max(target->ndefaults, 1) * sizeof(ExprState *));
	for (int i = 0; i < target->ndefaults; i++)
		k->default_state[i] = ExecInitExpr(target->default_expr[i], NULL);
	return true;
}

/*
 * The version row of the key in `row` into `out`; false when the key has
 * none. Read without a row lock (the statement holds the user row: see the
 * invariant above); a version row another transaction is writing anyway (it
 * cannot be for a key whose row we hold, but `conflicts prune` deletes
 * tombstones without their row) is waited for and read again.
 */
static bool
find_version(Capture *k, TupleTableSlot *row, TupleTableSlot *out)
{
	for (int i = 0; i < k->nkeys; i++)
		k->scankeys[i].sk_argument = row->tts_values[k->user_key[i]];
	for (;;)
	{
		TransactionId wait = InvalidTransactionId;
		bool		found;

		MemoryContext caller = MemoryContextSwitchTo(k->scan_context);

		k->dirty.xmin = InvalidTransactionId;
		k->dirty.xmax = InvalidTransactionId;
		index_rescan(k->scan, k->scankeys, k->nkeys, NULL, 0);
		found = index_getnext_slot(k->scan, ForwardScanDirection, out);
		MemoryContextSwitchTo(caller);
		if (found)
		{
			wait = TransactionIdIsValid(k->dirty.xmin) ? k->dirty.xmin : k->dirty.xmax;
			if (!TransactionIdIsValid(wait))
				ExecMaterializeSlot(out);
		}
		if (!TransactionIdIsValid(wait))
			return found;
		XactLockTableWait(wait, k->versions_rel, NULL, XLTW_None);
	}
}

/* Reads the clock offset setting (tests only); false when it is not a number (SQL then says why). */
static bool
clock_offset(int64 *offset)
{
	const char *text = GetConfigOption("mmlite.clock_offset_ms", true, false);
	char	   *end;

	*offset = 0;
	if (text == NULL || *text == '\0')
		return true;
	errno = 0;
	*offset = strtoll(text, &end, 10);
	return errno == 0 && *end == '\0';
}

/* True when every row of an UPDATE keeps its key (byte for byte). */
static bool
keys_unchanged(Capture *k, Tuplestorestate *old_rows, Tuplestorestate *new_rows)
{
	TupleDesc	desc = RelationGetDescr(k->user_rel);
	TupleTableSlot *o = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	TupleTableSlot *n = MakeSingleTupleTableSlot(desc, &TTSOpsMinimalTuple);
	int			old_ptr = tuplestore_alloc_read_pointer(old_rows, EXEC_FLAG_REWIND);
	int			new_ptr = tuplestore_alloc_read_pointer(new_rows, EXEC_FLAG_REWIND);
	bool		same = true;

	tuplestore_select_read_pointer(old_rows, old_ptr);
	tuplestore_rescan(old_rows);
	tuplestore_select_read_pointer(new_rows, new_ptr);
	tuplestore_rescan(new_rows);
	while (same)
	{
		bool		more_old = tuplestore_gettupleslot(old_rows, true, false, o);
		bool		more_new = tuplestore_gettupleslot(new_rows, true, false, n);

		if (!more_old || !more_new)
		{
			same = more_old == more_new;
			break;
		}
		slot_getallattrs(o);
		slot_getallattrs(n);
		for (int i = 0; same && i < k->nkeys; i++)
		{
			int			at = k->user_key[i];
			Form_pg_attribute att = TupleDescAttr(desc, at);

			same = !o->tts_isnull[at] && !n->tts_isnull[at] &&
				datumIsEqual(o->tts_values[at], n->tts_values[at], att->attbyval, att->attlen);
		}
	}
	ExecDropSingleTupleTableSlot(o);
	ExecDropSingleTupleTableSlot(n);
	return same;
}

/* One row's capture: its key's new version, and its change row. */
static void
capture_row(Capture *k, TupleTableSlot *row, Datum op_text, bool is_delete, int64 now_ms, EPQState *epq,
			TupleTableSlot *found, TupleTableSlot *version, TupleTableSlot *change)
{
	TupleDesc	versions_desc = RelationGetDescr(k->versions_rel);
	TupleDesc	change_desc = RelationGetDescr(k->changes_rel);
	ExprContext *econtext = GetPerTupleExprContext(k->estate);
	bool		replaces;
	int64		ms;
	int32		counter;
	Datum		me_text = k->me_text;

	slot_getallattrs(row);
	replaces = find_version(k, row, found);
	if (replaces)
		slot_getallattrs(found);
	/*
	 * A tombstone is the one version row written without its user row held:
	 * `conflicts prune` deletes old ones. Re-read it locked (waiting for a
	 * prune in progress) so that it cannot go between this read and the
	 * update; gone, the key gets a new version row.
	 */
	if (replaces && (found->tts_isnull[k->v[MMLITE_V_OP]] || mmlite_text_equals(found->tts_values[k->v[MMLITE_V_OP]], MMLITE_OP_DELETE_NAME)))
	{
		TupleTableSlot *key = table_slot_create(k->versions_rel, &k->estate->es_tupleTable);

		ExecClearTuple(key);
		memset(key->tts_values, 0, RelationGetDescr(k->versions_rel)->natts * sizeof(Datum));
		memset(key->tts_isnull, true, RelationGetDescr(k->versions_rel)->natts * sizeof(bool));
		for (int i = 0; i < k->nkeys; i++)
		{
			key->tts_values[k->versions_key[i]] = row->tts_values[k->user_key[i]];
			key->tts_isnull[k->versions_key[i]] = false;
		}
		ExecStoreVirtualTuple(key);
		replaces = RelationFindReplTupleByIndex(k->versions_rel, k->versions_pk, LockTupleNoKeyExclusive, key, found);
		if (replaces)
			slot_getallattrs(found);
	}
	if (replaces && (found->tts_isnull[k->v[MMLITE_V_MS]] || found->tts_isnull[k->v[MMLITE_V_COUNTER]]))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mmlite: a version row of \"%s\" has no version", RelationGetRelationName(k->versions_rel))));
	if (!mmlite_swift_next_version(now_ms, replaces,
								   replaces ? DatumGetInt64(found->tts_values[k->v[MMLITE_V_MS]]) : 0,
								   replaces ? DatumGetInt32(found->tts_values[k->v[MMLITE_V_COUNTER]]) : 0,
								   &ms, &counter))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("integer out of range"),
				 errdetail("The version counter of a key of \"%s\" cannot grow further.", RelationGetRelationName(k->user_rel))));

	/* The version row. */
	ExecClearTuple(version);
	if (replaces)
	{
		memcpy(version->tts_values, found->tts_values, versions_desc->natts * sizeof(Datum));
		memcpy(version->tts_isnull, found->tts_isnull, versions_desc->natts * sizeof(bool));
		version->tts_values[k->v[MMLITE_V_PREV_MS]] = found->tts_values[k->v[MMLITE_V_MS]];
		version->tts_isnull[k->v[MMLITE_V_PREV_MS]] = false;
		version->tts_values[k->v[MMLITE_V_PREV_COUNTER]] = found->tts_values[k->v[MMLITE_V_COUNTER]];
		version->tts_isnull[k->v[MMLITE_V_PREV_COUNTER]] = false;
		version->tts_values[k->v[MMLITE_V_PREV_NODE]] = found->tts_values[k->v[MMLITE_V_NODE]];
		version->tts_isnull[k->v[MMLITE_V_PREV_NODE]] = found->tts_isnull[k->v[MMLITE_V_NODE]];
		version->tts_values[k->v[MMLITE_V_PREV_OP]] = found->tts_values[k->v[MMLITE_V_OP]];
		version->tts_isnull[k->v[MMLITE_V_PREV_OP]] = found->tts_isnull[k->v[MMLITE_V_OP]];
	}
	else
	{
		memset(version->tts_values, 0, versions_desc->natts * sizeof(Datum));
		memset(version->tts_isnull, true, versions_desc->natts * sizeof(bool));
		for (int i = 0; i < k->nkeys; i++)
		{
			version->tts_values[k->versions_key[i]] = row->tts_values[k->user_key[i]];
			version->tts_isnull[k->versions_key[i]] = false;
		}
	}
	version->tts_values[k->v[MMLITE_V_MS]] = Int64GetDatum(ms);
	version->tts_isnull[k->v[MMLITE_V_MS]] = false;
	version->tts_values[k->v[MMLITE_V_COUNTER]] = Int32GetDatum(counter);
	version->tts_isnull[k->v[MMLITE_V_COUNTER]] = false;
	version->tts_values[k->v[MMLITE_V_NODE]] = me_text;
	version->tts_isnull[k->v[MMLITE_V_NODE]] = false;
	version->tts_values[k->v[MMLITE_V_OP]] = op_text;
	version->tts_isnull[k->v[MMLITE_V_OP]] = false;
	version->tts_values[k->v[MMLITE_V_CHANGED_AT]] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
	version->tts_isnull[k->v[MMLITE_V_CHANGED_AT]] = false;
	ExecStoreVirtualTuple(version);
	if (replaces)
		mmlite_simple_update(k->estate, &k->rris[0], epq, found, version);
	else
		mmlite_simple_insert(k->estate, &k->rris[0], version);

	/* The change row: the row (a delete: its key), the version, the replaced one. */
	ExecClearTuple(change);
	memset(change->tts_values, 0, change_desc->natts * sizeof(Datum));
	memset(change->tts_isnull, true, change_desc->natts * sizeof(bool));
	for (int i = 0; i < change_desc->natts; i++)
	{
		int			from = k->change_from_user[i];

		if (from < 0 || (is_delete && !k->change_is_key[i]))
			continue;
		change->tts_values[i] = row->tts_values[from];
		change->tts_isnull[i] = row->tts_isnull[from];
	}
	change->tts_values[k->c[MMLITE_C_NODE]] = me_text;
	change->tts_isnull[k->c[MMLITE_C_NODE]] = false;
	change->tts_values[k->c[MMLITE_C_OP]] = op_text;
	change->tts_isnull[k->c[MMLITE_C_OP]] = false;
	change->tts_values[k->c[MMLITE_C_V_MS]] = Int64GetDatum(ms);
	change->tts_isnull[k->c[MMLITE_C_V_MS]] = false;
	change->tts_values[k->c[MMLITE_C_V_COUNTER]] = Int32GetDatum(counter);
	change->tts_isnull[k->c[MMLITE_C_V_COUNTER]] = false;
	if (replaces)
	{
		change->tts_values[k->c[MMLITE_C_PREV_MS]] = found->tts_values[k->v[MMLITE_V_MS]];
		change->tts_isnull[k->c[MMLITE_C_PREV_MS]] = false;
		change->tts_values[k->c[MMLITE_C_PREV_COUNTER]] = found->tts_values[k->v[MMLITE_V_COUNTER]];
		change->tts_isnull[k->c[MMLITE_C_PREV_COUNTER]] = false;
		change->tts_values[k->c[MMLITE_C_PREV_NODE]] = found->tts_values[k->v[MMLITE_V_NODE]];
		change->tts_isnull[k->c[MMLITE_C_PREV_NODE]] = found->tts_isnull[k->v[MMLITE_V_NODE]];
	}
	for (int i = 0; i < k->target->ndefaults; i++)
	{
		int			at = k->target->default_at[i];

		change->tts_values[at] = ExecEvalExprSwitchContext(k->default_state[i], econtext, &change->tts_isnull[at]);
	}
	ExecStoreVirtualTuple(change);
	if (k->messages)
		mmlite_log_change_message(k->changes_rel, change);
	else
		mmlite_simple_insert(k->estate, &k->rris[1], change);
}

Datum
mmlite_capture_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	CaptureTarget *target;
	Relation	user_rel;
	Tuplestorestate *rows;
	const char *op;
	Datum		op_text;
	bool		is_delete = false;
	Capture		k;
	int64		offset;
	int64		now_ms;
	TimestampTz now;
	EPQState	epq;
	TupleTableSlot *row;
	TupleTableSlot *found;
	TupleTableSlot *version;
	TupleTableSlot *change;
	int			ptr;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		TRIGGER_FIRED_FOR_ROW(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mmlite.capture_change() must be fired AFTER ... FOR EACH STATEMENT")));

	target = capture_target(trigdata->tg_trigger);
	user_rel = trigdata->tg_relation;
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = MMLITE_OP_INSERT_NAME;
		rows = trigdata->tg_newtable;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		op = MMLITE_OP_DELETE_NAME;
		is_delete = true;
		rows = trigdata->tg_oldtable;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = MMLITE_OP_UPDATE_NAME;
		rows = trigdata->tg_newtable;
		if (trigdata->tg_oldtable == NULL)
			rows = NULL;
	}
	else
	{
		op = NULL;
		rows = NULL;
	}
	if (rows == NULL || user_rel->rd_rel->relkind != RELKIND_RELATION ||
		!columns_as_installed(target, RelationGetDescr(user_rel)) || !clock_offset(&offset) ||
		!may_write(target))
		return mmlite_call_trigger_function(&target->fallback, fcinfo);
	/*
	 * A statement that wrote no row has nothing to capture: the half of an
	 * INSERT ... ON CONFLICT DO UPDATE that did not happen fires its trigger
	 * over an empty transition table.
	 */
	if (tuplestore_tuple_count(rows) == 0)
		PG_RETURN_POINTER(NULL);

	/* As SPI does before a statement: our writes follow the user's. */
	CommandCounterIncrement();
	if (!open_capture(target, user_rel, &k))
		return mmlite_call_trigger_function(&target->fallback, fcinfo);
	if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event) && !keys_unchanged(&k, trigdata->tg_oldtable, rows))
	{
		/* A key moved: which keys are updates, inserts and deletes is a set question: SQL. */
		close_capture(&k);
		return mmlite_call_trigger_function(&target->fallback, fcinfo);
	}

	/* clock_timestamp() in Unix milliseconds, rounded as the SQL function's ::bigint does. */
	now = GetCurrentTimestamp();
	now_ms = (now + 500) / 1000 + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY * 1000 + offset;

	op_text = CStringGetTextDatum(op);
	row = MakeSingleTupleTableSlot(RelationGetDescr(user_rel), &TTSOpsMinimalTuple);
	found = table_slot_create(k.versions_rel, &k.estate->es_tupleTable);
	version = table_slot_create(k.versions_rel, &k.estate->es_tupleTable);
	change = table_slot_create(k.changes_rel, &k.estate->es_tupleTable);
	mmlite_epq_init(&epq, k.estate);
	AfterTriggerBeginQuery();
	ptr = tuplestore_alloc_read_pointer(rows, EXEC_FLAG_REWIND);
	tuplestore_select_read_pointer(rows, ptr);
	tuplestore_rescan(rows);
	while (tuplestore_gettupleslot(rows, true, false, row))
	{
		MemoryContext caller = MemoryContextSwitchTo(GetPerTupleMemoryContext(k.estate));

		capture_row(&k, row, op_text, is_delete, now_ms, &epq, found, version, change);
		MemoryContextSwitchTo(caller);
		ResetPerTupleExprContext(k.estate);
	}
	AfterTriggerEndQuery(k.estate);
	EvalPlanQualEnd(&epq);
	ExecDropSingleTupleTableSlot(row);
	close_capture(&k);
	PG_RETURN_POINTER(NULL);
}
