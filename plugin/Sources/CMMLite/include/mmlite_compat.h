/*
 * Every PostgreSQL-major difference the native apply path (mmlite_apply.c)
 * meets, in one place: executor set-up for direct table access changed in
 * 14 (ResultRelInfo arguments), 16 (permission infos, EPQ result relations,
 * summarizing indexes, object_aclcheck), 17 (decoded tuples, logical
 * message flush) and 18 (unpruned relids, index_beginscan's
 * instrumentation). The rest of mmlite_apply.c, mmlite_capture.c and
 * mmlite_change_message.c is version-free.
 */
#ifndef MMLITE_COMPAT_H
#define MMLITE_COMPAT_H

#include "postgres.h"
#include "access/genam.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/bitmapset.h"
#include "nodes/pg_list.h"
#include "storage/lockdefs.h"
#include "utils/rel.h"
#include "utils/acl.h"
#include "access/htup_details.h"
#include "replication/message.h"
#include "replication/reorderbuffer.h"
#if PG_VERSION_NUM >= 160000
#include "catalog/pg_namespace.h"
#include "parser/parse_relation.h"
#endif

/* Whether this process is a background worker (an apply worker is one); 17 made it a backend type. */
static inline bool
mmlite_is_background_worker(void)
{
#if PG_VERSION_NUM >= 170000
	return AmBackgroundWorkerProcess();
#else
	return IsBackgroundWorker;
#endif
}

/* A range table of `count` relations (RT indexes 1..count) for estate. */
static inline void
mmlite_init_range_table(EState *estate, Relation *rels, int count)
{
	List	   *rtable = NIL;
#if PG_VERSION_NUM >= 160000
	List	   *perminfos = NIL;
#endif

	for (int i = 0; i < count; i++)
	{
		RangeTblEntry *rte = makeNode(RangeTblEntry);

		rte->rtekind = RTE_RELATION;
		rte->relid = RelationGetRelid(rels[i]);
		rte->relkind = rels[i]->rd_rel->relkind;
		rte->rellockmode = RowExclusiveLock;
#if PG_VERSION_NUM >= 160000
		addRTEPermissionInfo(&perminfos, rte);
#endif
		rtable = lappend(rtable, rte);
	}
#if PG_VERSION_NUM >= 180000
	ExecInitRangeTable(estate, rtable, perminfos, bms_add_range(NULL, 1, count));
#elif PG_VERSION_NUM >= 160000
	ExecInitRangeTable(estate, rtable, perminfos);
#else
	ExecInitRangeTable(estate, rtable);
#endif
}

/*
 * Makes rris[0..count-1] (one array, RT indexes 1..count) the result
 * relations of estate, where ExecSimpleRelation* and the AFTER-trigger
 * machinery (ExecGetTriggerResultRel) find them.
 */
static inline void
mmlite_add_result_relations(EState *estate, ResultRelInfo *rris, int count)
{
#if PG_VERSION_NUM >= 140000
	for (int i = 0; i < count; i++)
		estate->es_opened_result_relations = lappend(estate->es_opened_result_relations, &rris[i]);
#else
	/* 13 keeps an array and one current result relation (mmlite_select()). */
	estate->es_result_relations = rris;
	estate->es_num_result_relations = count;
	estate->es_result_relation_info = &rris[0];
#endif
}

static inline void
mmlite_select(EState *estate, ResultRelInfo *rri)
{
#if PG_VERSION_NUM < 140000
	estate->es_result_relation_info = rri;
#else
	(void) estate;
	(void) rri;
#endif
}

static inline void
mmlite_epq_init(EPQState *epq, EState *estate)
{
#if PG_VERSION_NUM >= 160000
	EvalPlanQualInit(epq, estate, NULL, NIL, -1, NIL);
#else
	EvalPlanQualInit(epq, estate, NULL, NIL, -1);
#endif
}

static inline void
mmlite_simple_insert(EState *estate, ResultRelInfo *rri, TupleTableSlot *slot)
{
	mmlite_select(estate, rri);
#if PG_VERSION_NUM >= 140000
	ExecSimpleRelationInsert(rri, estate, slot);
#else
	ExecSimpleRelationInsert(estate, slot);
#endif
}

static inline void
mmlite_simple_update(EState *estate, ResultRelInfo *rri, EPQState *epq,
					 TupleTableSlot *searchslot, TupleTableSlot *slot)
{
	mmlite_select(estate, rri);
#if PG_VERSION_NUM >= 140000
	ExecSimpleRelationUpdate(rri, estate, epq, searchslot, slot);
#else
	ExecSimpleRelationUpdate(estate, epq, searchslot, slot);
#endif
}

static inline void
mmlite_simple_delete(EState *estate, ResultRelInfo *rri, EPQState *epq,
					 TupleTableSlot *searchslot)
{
	mmlite_select(estate, rri);
#if PG_VERSION_NUM >= 140000
	ExecSimpleRelationDelete(rri, estate, epq, searchslot);
#else
	ExecSimpleRelationDelete(estate, epq, searchslot);
#endif
}

/*
 * Index entries for a speculatively inserted tuple (what INSERT ... ON
 * CONFLICT does); *conflict when an arbiter already had the key. rri's
 * indexes must be open with speculative = true.
 */
static inline List *
mmlite_insert_index_tuples_speculative(EState *estate, ResultRelInfo *rri, TupleTableSlot *slot,
									   bool *conflict, List *arbiters)
{
	mmlite_select(estate, rri);
#if PG_VERSION_NUM >= 160000
	return ExecInsertIndexTuples(rri, slot, estate, false, true, conflict, arbiters, false);
#elif PG_VERSION_NUM >= 140000
	return ExecInsertIndexTuples(rri, slot, estate, false, true, conflict, arbiters);
#else
	return ExecInsertIndexTuples(slot, estate, true, conflict, arbiters);
#endif
}

/* USAGE (or another right) on a schema: 16 made the check generic. */
static inline bool
mmlite_schema_allows(Oid namespace, Oid role, AclMode mode)
{
#if PG_VERSION_NUM >= 160000
	return object_aclcheck(NamespaceRelationId, namespace, role, mode) == ACLCHECK_OK;
#else
	return pg_namespace_aclcheck(namespace, role, mode) == ACLCHECK_OK;
#endif
}

/* An index scan without instrumentation (18 added the parameter). */
static inline IndexScanDesc
mmlite_index_beginscan(Relation heap, Relation index, Snapshot snapshot, int nkeys)
{
#if PG_VERSION_NUM >= 180000
	return index_beginscan(heap, index, snapshot, NULL, nkeys, 0);
#else
	return index_beginscan(heap, index, snapshot, nkeys, 0);
#endif
}

/* A transactional logical decoding message (17 added `flush`). */
static inline void
mmlite_log_logical_message(const char *prefix, const char *message, Size size)
{
#if PG_VERSION_NUM >= 170000
	(void) LogLogicalMessage(prefix, message, size, true, false);
#else
	(void) LogLogicalMessage(prefix, message, size, true);
#endif
}

/*
 * A tuple of `len` data bytes as the decoder keeps a change's new row: until
 * 16 inside a ReorderBufferTupleBuf, from 17 a plain HeapTuple.
 */
static inline HeapTuple
mmlite_decoded_tuple_alloc(Size len)
{
#if PG_VERSION_NUM >= 170000
	HeapTuple	tuple = palloc0(HEAPTUPLESIZE + len);

	tuple->t_data = (HeapTupleHeader) ((char *) tuple + HEAPTUPLESIZE);
	return tuple;
#else
	ReorderBufferTupleBuf *buf = palloc0(sizeof(ReorderBufferTupleBuf) + MAXIMUM_ALIGNOF + len);

	buf->alloc_tuple_size = len;
	buf->tuple.t_data = ReorderBufferTupleBufData(buf);
	return &buf->tuple;
#endif
}

static inline void
mmlite_decoded_tuple_free(HeapTuple tuple)
{
#if PG_VERSION_NUM >= 170000
	pfree(tuple);
#else
	pfree((char *) tuple - offsetof(ReorderBufferTupleBuf, tuple));
#endif
}

/* A decoded change's new row (NULL if it has none), whatever the major keeps it in. */
static inline HeapTuple
mmlite_decoded_new_tuple(ReorderBufferChange *change)
{
#if PG_VERSION_NUM >= 170000
	return change->data.tp.newtuple;
#else
	return change->data.tp.newtuple != NULL ? &change->data.tp.newtuple->tuple : NULL;
#endif
}

/* Makes `change` the insert of `tuple` (from mmlite_decoded_tuple_alloc) into `rel`. */
static inline void
mmlite_set_decoded_insert(ReorderBufferChange *change, Relation rel, HeapTuple tuple)
{
	change->data.tp.clear_toast_afterwards = true;
	change->data.tp.oldtuple = NULL;
#if PG_VERSION_NUM >= 170000
	change->data.tp.newtuple = tuple;
#else
	change->data.tp.newtuple = (ReorderBufferTupleBuf *) ((char *) tuple - offsetof(ReorderBufferTupleBuf, tuple));
#endif
#if PG_VERSION_NUM >= 160000
	change->data.tp.rlocator = rel->rd_locator;
#else
	change->data.tp.relnode = rel->rd_node;
#endif
}

#endif							/* MMLITE_COMPAT_H */
