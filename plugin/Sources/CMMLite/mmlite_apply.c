/*
 * mmlite.apply_change(): the native apply trigger for conflict handling
 * (docs/conflicts.md, "Native apply").
 *
 * Installed by `mmlite apply` as
 *   CREATE TRIGGER mmlite_apply BEFORE INSERT ON mmlite."s.t$changes"
 *       FOR EACH ROW EXECUTE FUNCTION mmlite.apply_change(
 *           'user table', 'version table', 'SQL apply function()', 'this node');
 * (ENABLE REPLICA: it fires only in the apply worker). It takes the common
 * case, an update or delete of an existing row that was written on top of
 * this node's version of the row (or a row this node never versioned), straight to the
 * tables with the executor's simple-relation API, the way the apply worker
 * itself applies a plain change: no SQL statements, no plans. Everything else
 * (an insert, a tombstone, a genuine conflict, a column whose type differs)
 * goes to the generated plpgsql function, which decides and logs exactly as
 * without the native path. Before handing over it has only locked rows that
 * the SQL path locks first too (user row, then version row), so the
 * hand-over is invisible.
 *
 * All of it is C on purpose: every step calls PostgreSQL functions that may
 * raise, and a raise must never cross a Swift frame. The one decision that is
 * pure logic is Swift (mmlite_swift_apply_plan, ApplyPlan.swift), called
 * with plain values and returning before any further PostgreSQL call.
 */
#include "mmlite_pg.h"
#include "mmlite_compat.h"

#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_attribute.h"
#include "commands/trigger.h"
#include "executor/executor.h"
#include "executor/tuptable.h"
#include "nodes/execnodes.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/relcache.h"
#include "utils/timestamp.h"

/* Implemented in Swift (Sources/MMLitePlugin/ApplyPlan.swift). */
extern bool mmlite_swift_apply_considers(int32 op);
extern int32 mmlite_swift_apply_plan(int32 op, bool user_row_found, bool version_found,
									 bool version_is_tombstone, bool built_on_local_version);

#define MMLITE_PLAN_FALLBACK 0
#define MMLITE_PLAN_APPLY 1

PG_FUNCTION_INFO_V1(mmlite_apply_change);

/* What a trigger's arguments name, resolved once per trigger (by its OID). */
typedef struct ApplyTarget
{
	Oid			trigger_oid;
	Oid			user_relid;
	Oid			versions_relid;
	FmgrInfo	fallback;
	char	   *me;
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

	if (trigger->tgnargs != 4)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mmlite.apply_change() needs 4 trigger arguments (user table, version table, SQL apply function, node name), trigger \"%s\" has %d",
						trigger->tgname, trigger->tgnargs),
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

/* 0-based index of the live column `name` in desc, or -1. */
static int
column_index(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i;
	}
	return -1;
}

static bool
text_equals(Datum value, const char *cstring)
{
	text	   *t = DatumGetTextPP(value);
	size_t		len = strlen(cstring);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), cstring, len) == 0;
}

static bool
texts_equal(Datum a, Datum b)
{
	text	   *ta = DatumGetTextPP(a);
	text	   *tb = DatumGetTextPP(b);

	return VARSIZE_ANY_EXHDR(ta) == VARSIZE_ANY_EXHDR(tb) &&
		memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), VARSIZE_ANY_EXHDR(ta)) == 0;
}

/* 1 insert, 2 update, 3 delete, 0 anything else. */
static int32
op_code(Datum value)
{
	if (text_equals(value, "update"))
		return 2;
	if (text_equals(value, "insert"))
		return 1;
	if (text_equals(value, "delete"))
		return 3;
	return 0;
}

/* Runs the generated SQL apply function on the same trigger call. */
static Datum
call_fallback(ApplyTarget *target, FunctionCallInfo outer)
{
	LOCAL_FCINFO(call, 0);
	Datum		result;

	InitFunctionCallInfoData(*call, &target->fallback, 0, InvalidOid, outer->context, NULL);
	result = FunctionCallInvoke(call);
	outer->isnull = call->isnull;
	return result;
}

/* A virtual slot of rel holding only its key columns, taken from the change. */
static TupleTableSlot *
key_slot(EState *estate, Relation rel, Bitmapset *key_columns, TupleDesc change_desc,
		 const Datum *change_values, const bool *change_nulls, bool *ok)
{
	TupleDesc	desc = RelationGetDescr(rel);
	TupleTableSlot *slot = table_slot_create(rel, &estate->es_tupleTable);

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
		from = column_index(change_desc, NameStr(att->attname));
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

Datum
mmlite_apply_change(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	ApplyTarget *target;
	TupleDesc	change_desc;
	Datum	   *cv;
	bool	   *cn;
	int			c_node, c_op, c_v_ms, c_v_counter, c_prev_ms, c_prev_counter, c_prev_node;
	int32		op;
	Relation	user_rel;
	Relation	versions_rel;
	Relation	rels[2];
	TupleDesc	user_desc;
	TupleDesc	versions_desc;
	Bitmapset  *user_key;
	Bitmapset  *versions_key;
	Oid			user_pk;
	Oid			versions_pk;
	EState	   *estate;
	ResultRelInfo *rris;
	TupleTableSlot *user_search;
	TupleTableSlot *user_found;
	TupleTableSlot *versions_search;
	TupleTableSlot *versions_found;
	bool		keys_ok = true;
	bool		user_row_found;
	bool		version_found = false;
	bool		tombstone = false;
	bool		built_on_local = false;
	int			v_ms, v_counter, v_node, v_op, v_changed_at, v_prev_ms, v_prev_counter, v_prev_node, v_prev_op;

	if (!CALLED_AS_TRIGGER(fcinfo) ||
		!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mmlite.apply_change() must be fired BEFORE INSERT FOR EACH ROW")));

	target = apply_target(trigdata->tg_trigger);

	/* The arriving change row. */
	change_desc = RelationGetDescr(trigdata->tg_relation);
	cv = palloc(change_desc->natts * sizeof(Datum));
	cn = palloc(change_desc->natts * sizeof(bool));
	heap_deform_tuple(trigdata->tg_trigtuple, change_desc, cv, cn);
	c_node = column_index(change_desc, "mm_node");
	c_op = column_index(change_desc, "mm_op");
	c_v_ms = column_index(change_desc, "mm_v_ms");
	c_v_counter = column_index(change_desc, "mm_v_counter");
	c_prev_ms = column_index(change_desc, "mm_prev_ms");
	c_prev_counter = column_index(change_desc, "mm_prev_counter");
	c_prev_node = column_index(change_desc, "mm_prev_node");
	if (c_node < 0 || c_op < 0 || c_v_ms < 0 || c_v_counter < 0 || c_prev_ms < 0 ||
		c_prev_counter < 0 || c_prev_node < 0 || cn[c_node] || cn[c_op] || cn[c_v_ms] || cn[c_v_counter])
		return call_fallback(target, fcinfo);
	/* This node's own change coming back: never applied (as in SQL). */
	if (text_equals(cv[c_node], target->me))
		PG_RETURN_POINTER(NULL);
	op = op_code(cv[c_op]);
	if (!mmlite_swift_apply_considers(op))
		return call_fallback(target, fcinfo);

	user_rel = table_open(target->user_relid, RowExclusiveLock);
	versions_rel = table_open(target->versions_relid, RowExclusiveLock);
	user_desc = RelationGetDescr(user_rel);
	versions_desc = RelationGetDescr(versions_rel);
	(void) RelationGetIndexList(user_rel);	/* sets rd_pkindex */
	(void) RelationGetIndexList(versions_rel);
	user_pk = user_rel->rd_pkindex;
	versions_pk = versions_rel->rd_pkindex;
	user_key = RelationGetIndexAttrBitmap(user_rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	versions_key = RelationGetIndexAttrBitmap(versions_rel, INDEX_ATTR_BITMAP_PRIMARY_KEY);
	v_ms = column_index(versions_desc, "v_ms");
	v_counter = column_index(versions_desc, "v_counter");
	v_node = column_index(versions_desc, "v_node");
	v_op = column_index(versions_desc, "op");
	v_changed_at = column_index(versions_desc, "changed_at");
	v_prev_ms = column_index(versions_desc, "prev_ms");
	v_prev_counter = column_index(versions_desc, "prev_counter");
	v_prev_node = column_index(versions_desc, "prev_node");
	v_prev_op = column_index(versions_desc, "prev_op");
	if (!OidIsValid(user_pk) || !OidIsValid(versions_pk) || v_ms < 0 || v_counter < 0 || v_node < 0 ||
		v_op < 0 || v_changed_at < 0 || v_prev_ms < 0 || v_prev_counter < 0 || v_prev_node < 0 || v_prev_op < 0)
	{
		table_close(versions_rel, NoLock);
		table_close(user_rel, NoLock);
		return call_fallback(target, fcinfo);
	}

	estate = CreateExecutorState();
	rels[0] = user_rel;
	rels[1] = versions_rel;
	mmlite_init_range_table(estate, rels, 2);
	rris = palloc0(2 * sizeof(ResultRelInfo));
	InitResultRelInfo(&rris[0], user_rel, 1, NULL, 0);
	InitResultRelInfo(&rris[1], versions_rel, 2, NULL, 0);
	mmlite_add_result_relations(estate, rris, 2);
	estate->es_output_cid = GetCurrentCommandId(true);

	/* Lock order as everywhere: the user row first, then the version row. */
	user_search = key_slot(estate, user_rel, user_key, change_desc, cv, cn, &keys_ok);
	versions_search = key_slot(estate, versions_rel, versions_key, change_desc, cv, cn, &keys_ok);
	user_found = table_slot_create(user_rel, &estate->es_tupleTable);
	versions_found = table_slot_create(versions_rel, &estate->es_tupleTable);
	user_row_found = keys_ok &&
		RelationFindReplTupleByIndex(user_rel, user_pk, LockTupleExclusive, user_search, user_found);
	if (user_row_found)
	{
		version_found = RelationFindReplTupleByIndex(versions_rel, versions_pk, LockTupleExclusive,
													 versions_search, versions_found);
		if (version_found)
		{
			slot_getallattrs(versions_found);
			tombstone = versions_found->tts_isnull[v_op] || text_equals(versions_found->tts_values[v_op], "delete");
			built_on_local = !cn[c_prev_ms] && !cn[c_prev_counter] && !cn[c_prev_node] &&
				!versions_found->tts_isnull[v_ms] && !versions_found->tts_isnull[v_counter] &&
				!versions_found->tts_isnull[v_node] &&
				DatumGetInt64(cv[c_prev_ms]) == DatumGetInt64(versions_found->tts_values[v_ms]) &&
				DatumGetInt32(cv[c_prev_counter]) == DatumGetInt32(versions_found->tts_values[v_counter]) &&
				texts_equal(cv[c_prev_node], versions_found->tts_values[v_node]);
		}
	}

	if (mmlite_swift_apply_plan(op, user_row_found, version_found, tombstone, built_on_local) == MMLITE_PLAN_APPLY)
	{
		TupleTableSlot *versions_new = table_slot_create(versions_rel, &estate->es_tupleTable);
		EPQState	epq;
		bool		row_ok = true;

		ExecOpenIndices(&rris[0], false);
		ExecOpenIndices(&rris[1], false);
		mmlite_epq_init(&epq, estate);
		AfterTriggerBeginQuery();

		/* The new version: the change's, replacing the local one (kept as prev_*). */
		ExecClearTuple(versions_new);
		if (version_found)
		{
			memcpy(versions_new->tts_values, versions_found->tts_values, versions_desc->natts * sizeof(Datum));
			memcpy(versions_new->tts_isnull, versions_found->tts_isnull, versions_desc->natts * sizeof(bool));
			versions_new->tts_values[v_prev_ms] = versions_found->tts_values[v_ms];
			versions_new->tts_isnull[v_prev_ms] = versions_found->tts_isnull[v_ms];
			versions_new->tts_values[v_prev_counter] = versions_found->tts_values[v_counter];
			versions_new->tts_isnull[v_prev_counter] = versions_found->tts_isnull[v_counter];
			versions_new->tts_values[v_prev_node] = versions_found->tts_values[v_node];
			versions_new->tts_isnull[v_prev_node] = versions_found->tts_isnull[v_node];
			versions_new->tts_values[v_prev_op] = versions_found->tts_values[v_op];
			versions_new->tts_isnull[v_prev_op] = versions_found->tts_isnull[v_op];
		}
		else
		{
			memcpy(versions_new->tts_values, versions_search->tts_values, versions_desc->natts * sizeof(Datum));
			memcpy(versions_new->tts_isnull, versions_search->tts_isnull, versions_desc->natts * sizeof(bool));
		}
		versions_new->tts_values[v_ms] = cv[c_v_ms];
		versions_new->tts_isnull[v_ms] = false;
		versions_new->tts_values[v_counter] = cv[c_v_counter];
		versions_new->tts_isnull[v_counter] = false;
		versions_new->tts_values[v_node] = cv[c_node];
		versions_new->tts_isnull[v_node] = false;
		versions_new->tts_values[v_op] = cv[c_op];
		versions_new->tts_isnull[v_op] = false;
		versions_new->tts_values[v_changed_at] = TimestampTzGetDatum(GetCurrentTransactionStartTimestamp());
		versions_new->tts_isnull[v_changed_at] = false;
		ExecStoreVirtualTuple(versions_new);

		if (op == 3)
		{
			if (version_found)
				mmlite_simple_update(estate, &rris[1], &epq, versions_found, versions_new);
			else
				mmlite_simple_insert(estate, &rris[1], versions_new);
			mmlite_simple_delete(estate, &rris[0], &epq, user_found);
		}
		else
		{
			/* The row image: every writable non-key column from the change. */
			TupleTableSlot *user_new = table_slot_create(user_rel, &estate->es_tupleTable);

			slot_getallattrs(user_found);
			ExecClearTuple(user_new);
			memcpy(user_new->tts_values, user_found->tts_values, user_desc->natts * sizeof(Datum));
			memcpy(user_new->tts_isnull, user_found->tts_isnull, user_desc->natts * sizeof(bool));
			for (int i = 0; i < user_desc->natts && row_ok; i++)
			{
				Form_pg_attribute att = TupleDescAttr(user_desc, i);
				int			from;

				if (att->attisdropped || att->attgenerated != '\0' ||
					att->attidentity == ATTRIBUTE_IDENTITY_ALWAYS ||
					bms_is_member(att->attnum - FirstLowInvalidHeapAttributeNumber, user_key))
					continue;
				from = column_index(change_desc, NameStr(att->attname));
				if (from < 0 || TupleDescAttr(change_desc, from)->atttypid != att->atttypid)
					row_ok = false;
				else
				{
					user_new->tts_values[i] = cv[from];
					user_new->tts_isnull[i] = cn[from];
				}
			}
			ExecStoreVirtualTuple(user_new);
			if (row_ok)
			{
				if (version_found)
					mmlite_simple_update(estate, &rris[1], &epq, versions_found, versions_new);
				else
					mmlite_simple_insert(estate, &rris[1], versions_new);
				mmlite_simple_update(estate, &rris[0], &epq, user_found, user_new);
			}
		}

		AfterTriggerEndQuery(estate);
		EvalPlanQualEnd(&epq);
		ExecCloseIndices(&rris[1]);
		ExecCloseIndices(&rris[0]);
		ExecResetTupleTable(estate->es_tupleTable, false);
		FreeExecutorState(estate);
		table_close(versions_rel, NoLock);
		table_close(user_rel, NoLock);
		/* A column the change table lacks (or types differ): nothing was written. */
		if (!row_ok)
			return call_fallback(target, fcinfo);
		PG_RETURN_POINTER(NULL);
	}

	ExecResetTupleTable(estate->es_tupleTable, false);
	FreeExecutorState(estate);
	table_close(versions_rel, NoLock);
	table_close(user_rel, NoLock);
	return call_fallback(target, fcinfo);
}
