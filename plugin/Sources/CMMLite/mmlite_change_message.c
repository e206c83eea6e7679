/*
 * Change messages, both halves: written by the capture trigger
 * (mmlite_capture.c), turned back into change-table INSERTs by the output
 * plugin. See mmlite_change_message.h and docs/conflicts.md.
 *
 * A message holds a format number, the change table's OID and the change
 * row as a heap tuple (every value inline: a TOAST pointer into the user
 * table would not survive decoding). The decoder rebuilds the tuple and calls
 * pgoutput's own change callback with it, exactly as if the row had been
 * inserted: publication membership, column lists, row filters, streaming and
 * protocol versions stay pgoutput's.
 *
 * The handshake. A change message is lost if a decoder that does not know
 * them reads it: a slot of another plugin (pgoutput for `origin = none`
 * links, a table-sync slot), or an mmlite.so built before them that a
 * running walsender still has loaded after a package upgrade. So a decoder
 * that translates them holds a session-level advisory lock keyed by its PID
 * (objsubid 3, which SQL's advisory functions never use: they use 1 and 2),
 * taken when it starts decoding; the trigger sends messages only when every
 * logical slot of the database uses this plugin and the process decoding
 * each active one holds that lock. An inactive slot is decoded later by
 * whatever mmlite.so is installed then. A slot created after the check
 * cannot decode the statement's transaction: a new slot's snapshot waits for
 * every transaction running while it is created.
 */
#include "mmlite_change_message.h"
#include "mmlite_compat.h"
#include "mmlite_contract.h"
#include "mmlite_tables.h"

#include "access/detoast.h"
#include "access/heaptoast.h"
#include "access/htup_details.h"
#include "access/tupmacs.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "replication/reorderbuffer.h"
#include "replication/slot.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"

/*
 * The decoder's lock: database, PID, this key, objsubid 3. The key names the
 * message format the decoder reads ("mmlt" for format 1, one more for each
 * later one), so capture of another format finds no announcement and stores
 * rows instead of sending messages a decoder would skip.
 */
#define MMLITE_DECODER_LOCK_KEY (0x6d6d6c74 + MMLITE_CHANGE_MESSAGE_FORMAT - 1)
#define MMLITE_DECODER_LOCK_SPACE 3

typedef struct ChangeMessageHeader
{
	uint32		format;
	Oid			relid;
} ChangeMessageHeader;

static void
decoder_lock_tag(LOCKTAG *tag, int pid)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) pid, MMLITE_DECODER_LOCK_KEY, MMLITE_DECODER_LOCK_SPACE);
}

/* Whether process `pid` announced that it decodes change messages (holds its lock). */
static bool
decoder_announced(int pid)
{
	LOCKTAG		tag;
	LockAcquireResult result;

	decoder_lock_tag(&tag, pid);
	result = LockAcquire(&tag, ShareLock, false, true);
	if (result == LOCKACQUIRE_NOT_AVAIL)
		return true;
	LockRelease(&tag, ShareLock, false);
	return false;
}

bool
mmlite_change_messages_decoded(void)
{
	int		   *pids = palloc(Max(max_replication_slots, 1) * sizeof(int));
	int			npids = 0;
	bool		ok = true;

	LWLockAcquire(ReplicationSlotControlLock, LW_SHARED);
	for (int i = 0; ok && i < max_replication_slots; i++)
	{
		ReplicationSlot *slot = &ReplicationSlotCtl->replication_slots[i];

		if (!slot->in_use)
			continue;
		SpinLockAcquire(&slot->mutex);
		if (slot->data.database == MyDatabaseId)
		{
			ok = strcmp(NameStr(slot->data.plugin), MMLITE_SLOT_PLUGIN) == 0;
			if (slot->active_pid != 0)
				pids[npids++] = slot->active_pid;
		}
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(ReplicationSlotControlLock);
	for (int i = 0; ok && i < npids; i++)
		ok = decoder_announced(pids[i]);
	pfree(pids);
	return ok;
}

void
mmlite_log_change_message(Relation changes_rel, TupleTableSlot *change)
{
	TupleDesc	desc = RelationGetDescr(changes_rel);
	ChangeMessageHeader header;
	HeapTuple	tuple;
	char	   *message;
	Size		size;

	slot_getallattrs(change);
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (att->attlen == -1 && !change->tts_isnull[i] && VARATT_IS_EXTERNAL(DatumGetPointer(change->tts_values[i])))
			change->tts_values[i] = PointerGetDatum(detoast_external_attr((struct varlena *) DatumGetPointer(change->tts_values[i])));
	}
	tuple = heap_form_tuple(desc, change->tts_values, change->tts_isnull);
	header.format = MMLITE_CHANGE_MESSAGE_FORMAT;
	header.relid = RelationGetRelid(changes_rel);
	size = sizeof(header) + tuple->t_len;
	message = palloc(size);
	memcpy(message, &header, sizeof(header));
	memcpy(message + sizeof(header), tuple->t_data, tuple->t_len);
	mmlite_log_logical_message(MMLITE_CHANGE_MESSAGE_PREFIX, message, size);
	pfree(message);
	heap_freetuple(tuple);
}

/* The plugin side. pgoutput's callbacks, as its _PG_output_plugin_init set them. */
static LogicalDecodeStartupCB pgoutput_startup;
static LogicalDecodeChangeCB pgoutput_change;
static LogicalDecodeMessageCB pgoutput_message;
#if PG_VERSION_NUM >= 140000
static LogicalDecodeChangeCB pgoutput_stream_change;
static LogicalDecodeMessageCB pgoutput_stream_message;
#endif
static bool announced = false;

/* Decoding starts: pgoutput's start-up, then the announcement (held until the process exits). */
static void
mmlite_startup(LogicalDecodingContext *ctx, OutputPluginOptions *opt, bool is_init)
{
	pgoutput_startup(ctx, opt, is_init);
	if (!is_init && !announced)
	{
		LOCKTAG		tag;

		decoder_lock_tag(&tag, MyProcPid);
		(void) LockAcquire(&tag, ExclusiveLock, true, false);
		announced = true;
	}
}

/*
 * The authentication. Any role may call pg_logical_emit_message(), so a
 * message proves nothing by itself; the capture trigger writes a change
 * message right after the version row of the same key, in the same
 * transaction. So the decoder remembers the last change it was given if it
 * is a write of a version table ("s.t$versions" in schema mmlite), and takes a
 * message only as the very next change of that transaction, for the paired
 * change table "s.t$changes", with the same key and version. A role that may
 * not write the version table cannot produce that; one that may can insert
 * change rows anyway. Anything else is skipped with a WARNING, never an
 * ERROR: an ERROR would stop replication, which any role could then do.
 */
static MemoryContext remembered_context = NULL;
static TransactionId remembered_xid = InvalidTransactionId;
static Oid	remembered_relid = InvalidOid;
static HeapTuple remembered_version = NULL;

static bool
has_suffix(const char *name, const char *suffix)
{
	size_t		n = strlen(name);
	size_t		k = strlen(suffix);

	return n > k && strcmp(name + n - k, suffix) == 0;
}

/* Whether rel is in mmlite's schema and named ...`suffix`. */
static bool
is_mmlite_table(Relation rel, const char *suffix)
{
	char	   *schema;
	bool		ok;

	if (!has_suffix(RelationGetRelationName(rel), suffix))
		return false;
	schema = get_namespace_name(RelationGetNamespace(rel));
	ok = schema != NULL && strcmp(schema, MMLITE_SCHEMA) == 0;
	if (schema != NULL)
		pfree(schema);
	return ok;
}

static void
forget_version(void)
{
	remembered_xid = InvalidTransactionId;
	remembered_relid = InvalidOid;
	remembered_version = NULL;
	if (remembered_context != NULL)
		MemoryContextReset(remembered_context);
}

/* Every change passes here on its way to pgoutput: a version-table write is remembered, anything else forgets it. */
static void
note_change(ReorderBufferTXN *txn, Relation rel, ReorderBufferChange *change)
{
	HeapTuple	newtuple = NULL;

	forget_version();
	if (change->action == REORDER_BUFFER_CHANGE_INSERT || change->action == REORDER_BUFFER_CHANGE_UPDATE)
		newtuple = mmlite_decoded_new_tuple(change);
	if (newtuple == NULL || !is_mmlite_table(rel, MMLITE_VERSIONS_SUFFIX))
		return;
	if (remembered_context == NULL)
		remembered_context = AllocSetContextCreate(TopMemoryContext, "mmlite change message check", ALLOCSET_SMALL_SIZES);
	{
		MemoryContext caller = MemoryContextSwitchTo(remembered_context);

		/* Flattened: the decoder's out-of-line values are freed after this change. */
		remembered_version = HeapTupleHasExternal(newtuple) ?
			toast_flatten_tuple(newtuple, RelationGetDescr(rel)) : heap_copytuple(newtuple);
		MemoryContextSwitchTo(caller);
	}
	remembered_relid = RelationGetRelid(rel);
	remembered_xid = txn->xid;
}

static void
mmlite_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel, ReorderBufferChange *change)
{
	note_change(txn, rel, change);
	pgoutput_change(ctx, txn, rel, change);
}

#if PG_VERSION_NUM >= 140000
static void
mmlite_stream_change(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, Relation rel, ReorderBufferChange *change)
{
	note_change(txn, rel, change);
	pgoutput_stream_change(ctx, txn, rel, change);
}
#endif

/*
 * Whether the tuple's data fits in its length, attribute by attribute, with
 * no out-of-line value: checked before anything reads it as a row.
 */
static bool
tuple_well_formed(TupleDesc desc, HeapTuple tuple)
{
	HeapTupleHeader t = tuple->t_data;
	int			natts = HeapTupleHeaderGetNatts(t);
	bool		hasnulls = HeapTupleHasNulls(tuple);
	char	   *data;
	char	   *end = (char *) t + tuple->t_len;
	uint32		off = 0;

	if (natts > desc->natts || t->t_hoff < SizeofHeapTupleHeader || t->t_hoff > tuple->t_len ||
		(hasnulls && SizeofHeapTupleHeader + BITMAPLEN(natts) > t->t_hoff))
		return false;
	data = (char *) t + t->t_hoff;
	for (int i = 0; i < natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);
		char	   *p;

		if (hasnulls && att_isnull(i, t->t_bits))
			continue;
		if (att->attlen == -1 && data + off < end && VARATT_NOT_PAD_BYTE(data + off))
			p = data + off;		/* a short varlena is not aligned */
		else
		{
			off = att_align_nominal(off, att->attalign);
			p = data + off;
		}
		if (att->attlen > 0)
		{
			if (p + att->attlen > end)
				return false;
			off += att->attlen;
		}
		else if (att->attlen == -1)
		{
			if (p >= end || (!VARATT_IS_1B(p) && p + VARHDRSZ > end) || VARATT_IS_EXTERNAL(p) ||
				p + VARSIZE_ANY(p) > end || VARSIZE_ANY(p) < (VARATT_IS_1B(p) ? VARHDRSZ_SHORT : VARHDRSZ))
				return false;
			off += VARSIZE_ANY(p);
		}
		else
		{
			/* cstring */
			size_t		room = end - p;

			if (p >= end || strnlen(p, room) >= room)
				return false;
			off += strlen(p) + 1;
		}
	}
	return true;
}

/* Two values of one type, compared by their bytes (varlenas by their contents, whatever their headers). */
static bool
same_value(Datum a, Datum b, Form_pg_attribute att)
{
	if (att->attlen == -1)
	{
		struct varlena *va = PG_DETOAST_DATUM_PACKED(a);
		struct varlena *vb = PG_DETOAST_DATUM_PACKED(b);

		return VARSIZE_ANY_EXHDR(va) == VARSIZE_ANY_EXHDR(vb) &&
			memcmp(VARDATA_ANY(va), VARDATA_ANY(vb), VARSIZE_ANY_EXHDR(va)) == 0;
	}
	return datumIsEqual(a, b, att->attbyval, att->attlen);
}

/*
 * Whether `tuple` (a row of change table `rel`) is what the capture trigger
 * wrote after the remembered version row: the paired tables, the same key
 * and version. Null when it is, else why not.
 */
static const char *
not_captured(ReorderBufferTXN *txn, Relation rel, HeapTuple tuple)
{
	static const char *const version_columns[] = MMLITE_VERSION_COLUMNS;
	static const char *const change_columns[] = MMLITE_CHANGE_COLUMNS;
	/* change column, version column: the same value in both */
	static const int same[][2] = {{MMLITE_C_V_MS, MMLITE_V_MS}, {MMLITE_C_V_COUNTER, MMLITE_V_COUNTER},
								  {MMLITE_C_NODE, MMLITE_V_NODE}, {MMLITE_C_OP, MMLITE_V_OP}};
	TupleDesc	change_desc = RelationGetDescr(rel);
	Relation	versions;
	TupleDesc	versions_desc;
	const char *name;
	const char *versions_name;
	Datum	   *cv;
	bool	   *cn;
	Datum	   *vv;
	bool	   *vn;
	const char *why = NULL;

	if (remembered_version == NULL || remembered_xid != txn->xid)
		return "it does not follow a version row written by the same transaction";
	if (!is_mmlite_table(rel, MMLITE_CHANGES_SUFFIX))
		return "it names a table that is not a change table";
	if (!tuple_well_formed(change_desc, tuple))
		return "its row is malformed";
	versions = RelationIdGetRelation(remembered_relid);
	if (!RelationIsValid(versions))
		return "its version table is gone";
	name = RelationGetRelationName(rel);
	versions_name = RelationGetRelationName(versions);
	if (RelationGetNamespace(versions) != RelationGetNamespace(rel) ||
		strlen(name) - strlen(MMLITE_CHANGES_SUFFIX) != strlen(versions_name) - strlen(MMLITE_VERSIONS_SUFFIX) ||
		strncmp(name, versions_name, strlen(name) - strlen(MMLITE_CHANGES_SUFFIX)) != 0)
	{
		RelationClose(versions);
		return "its change table is not the one of the version row before it";
	}
	versions_desc = RelationGetDescr(versions);
	cv = palloc(change_desc->natts * sizeof(Datum));
	cn = palloc(change_desc->natts * sizeof(bool));
	vv = palloc(versions_desc->natts * sizeof(Datum));
	vn = palloc(versions_desc->natts * sizeof(bool));
	heap_deform_tuple(tuple, change_desc, cv, cn);
	heap_deform_tuple(remembered_version, versions_desc, vv, vn);
	for (int i = 0; why == NULL && i < (int) lengthof(same); i++)
	{
		int			c = mmlite_column_index(change_desc, change_columns[same[i][0]]);
		int			v = mmlite_column_index(versions_desc, version_columns[same[i][1]]);

		if (c < 0 || v < 0 || cn[c] || vn[v] ||
			TupleDescAttr(change_desc, c)->atttypid != TupleDescAttr(versions_desc, v)->atttypid ||
			!same_value(cv[c], vv[v], TupleDescAttr(versions_desc, v)))
			why = "its version is not the one of the version row before it";
	}
	/* The key: every version-table column that is not one of mmlite's. */
	for (int v = 0; why == NULL && v < versions_desc->natts; v++)
	{
		Form_pg_attribute att = TupleDescAttr(versions_desc, v);
		bool		meta = false;
		int			c;

		for (int j = 0; j < (int) lengthof(version_columns); j++)
			meta = meta || strcmp(NameStr(att->attname), version_columns[j]) == 0;
		if (att->attisdropped || meta)
			continue;
		c = mmlite_column_index(change_desc, NameStr(att->attname));
		if (c < 0 || cn[c] || vn[v] || TupleDescAttr(change_desc, c)->atttypid != att->atttypid ||
			!same_value(cv[c], vv[v], att))
			why = "its key is not the one of the version row before it";
	}
	RelationClose(versions);
	return why;
}

/* Skips a message no capture trigger wrote, saying so in the server log. */
static void
skip_message(XLogRecPtr lsn, const char *why)
{
	ereport(WARNING,
			(errcode(ERRCODE_DATA_CORRUPTED),
			 errmsg("mmlite: skipped the change message at %X/%X: %s",
					(uint32) (lsn >> 32), (uint32) lsn, why),
			 errdetail("Only mmlite's capture trigger writes messages with the prefix \"%s\"; this one was written otherwise (pg_logical_emit_message), or by a build this one does not read.",
					   MMLITE_CHANGE_MESSAGE_PREFIX)));
}

/* A change message as pgoutput's INSERT of its row into its change table. */
static void
decode_change_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn,
					  bool transactional, Size size, const char *message, LogicalDecodeChangeCB change_cb)
{
	ChangeMessageHeader header;
	Size		tuple_len;
	Relation	rel;
	ReorderBufferChange change;
	HeapTuple	tuple;
	const char *why;

	if (!transactional || txn == NULL || size < sizeof(header) + SizeofHeapTupleHeader)
	{
		forget_version();
		skip_message(lsn, transactional ? "it is too short" : "it is not transactional");
		return;
	}
	memcpy(&header, message, sizeof(header));
	if (header.format != MMLITE_CHANGE_MESSAGE_FORMAT)
	{
		forget_version();
		skip_message(lsn, "its format is not one this build reads");
		return;
	}
	rel = RelationIdGetRelation(header.relid);
	if (!RelationIsValid(rel))
	{
		forget_version();
		skip_message(lsn, "it names no table");
		return;
	}
	tuple_len = size - sizeof(header);
	tuple = mmlite_decoded_tuple_alloc(tuple_len);
	memcpy(tuple->t_data, message + sizeof(header), tuple_len);
	tuple->t_len = tuple_len;
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = header.relid;
	why = not_captured(txn, rel, tuple);
	forget_version();
	if (why != NULL)
	{
		skip_message(lsn, why);
		RelationClose(rel);
		mmlite_decoded_tuple_free(tuple);
		return;
	}

	memset(&change, 0, sizeof(change));
	change.action = REORDER_BUFFER_CHANGE_INSERT;
	change.lsn = lsn;
	change.txn = txn;
	change.origin_id = InvalidRepOriginId;
	mmlite_set_decoded_insert(&change, rel, tuple);
	change_cb(ctx, txn, rel, &change);
	RelationClose(rel);
	mmlite_decoded_tuple_free(tuple);
}

/*
 * Our messages to `change_cb`, every other one to pgoutput's `message_cb`
 * (none in 13). Ours are read in a context of their own, emptied after each:
 * the callbacks run in the decoding's transaction context, which lives until
 * the whole decoded transaction has been sent (a 200k-row statement is 200k
 * messages).
 */
static void
route_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
			  const char *prefix, Size size, const char *message,
			  LogicalDecodeChangeCB change_cb, LogicalDecodeMessageCB message_cb)
{
	static MemoryContext message_context = NULL;

	if (strcmp(prefix, MMLITE_CHANGE_MESSAGE_PREFIX) == 0)
	{
		MemoryContext caller;

		if (message_context == NULL)
			message_context = AllocSetContextCreate(TopMemoryContext, "mmlite change message", ALLOCSET_DEFAULT_SIZES);
		caller = MemoryContextSwitchTo(message_context);
		decode_change_message(ctx, txn, lsn, transactional, size, message, change_cb);
		MemoryContextSwitchTo(caller);
		MemoryContextReset(message_context);
	}
	else if (message_cb != NULL)
		message_cb(ctx, txn, lsn, transactional, prefix, size, message);
}

static void
mmlite_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
			   const char *prefix, Size size, const char *message)
{
	route_message(ctx, txn, lsn, transactional, prefix, size, message, pgoutput_change, pgoutput_message);
}

#if PG_VERSION_NUM >= 140000
static void
mmlite_stream_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
					  const char *prefix, Size size, const char *message)
{
	route_message(ctx, txn, lsn, transactional, prefix, size, message, pgoutput_stream_change, pgoutput_stream_message);
}
#endif

void
mmlite_change_messages_init(OutputPluginCallbacks *cb)
{
	pgoutput_startup = cb->startup_cb;
	pgoutput_change = cb->change_cb;
	pgoutput_message = cb->message_cb;
	cb->startup_cb = mmlite_startup;
	cb->change_cb = mmlite_change;
	cb->message_cb = mmlite_message;
#if PG_VERSION_NUM >= 140000
	pgoutput_stream_change = cb->stream_change_cb;
	pgoutput_stream_message = cb->stream_message_cb;
	if (pgoutput_stream_change != NULL)
	{
		cb->stream_change_cb = mmlite_stream_change;
		cb->stream_message_cb = mmlite_stream_message;
	}
#endif
}
