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

#include "access/detoast.h"
#include "access/htup_details.h"
#include "miscadmin.h"
#include "replication/logical.h"
#include "replication/message.h"
#include "replication/origin.h"
#include "replication/reorderbuffer.h"
#include "replication/slot.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/rel.h"

/* The decoder's lock: database, PID, this key, objsubid 3. */
#define MMLITE_DECODER_LOCK_KEY 0x6d6d6c74	/* "mmlt" */
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

	if (!transactional || txn == NULL || size < sizeof(header) + SizeofHeapTupleHeader)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mmlite: malformed change message at %X/%X (%zu bytes%s)",
						(uint32) (lsn >> 32), (uint32) lsn, size, transactional ? "" : ", not transactional")));
	memcpy(&header, message, sizeof(header));
	if (header.format != MMLITE_CHANGE_MESSAGE_FORMAT)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("mmlite: the change message at %X/%X has format %u, this mmlite.so (%s) reads format %d",
						(uint32) (lsn >> 32), (uint32) lsn, header.format, MMLITE_VERSION, MMLITE_CHANGE_MESSAGE_FORMAT),
				 errhint("Install the mmlite.so that wrote it (or a later one) on this server.")));
	rel = RelationIdGetRelation(header.relid);
	if (!RelationIsValid(rel))
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mmlite: the change message at %X/%X names relation %u, which does not exist there",
						(uint32) (lsn >> 32), (uint32) lsn, header.relid)));
	tuple_len = size - sizeof(header);
	tuple = mmlite_decoded_tuple_alloc(tuple_len);
	memcpy(tuple->t_data, message + sizeof(header), tuple_len);
	tuple->t_len = tuple_len;
	ItemPointerSetInvalid(&tuple->t_self);
	tuple->t_tableOid = header.relid;
	if (HeapTupleHeaderGetNatts(tuple->t_data) > RelationGetDescr(rel)->natts ||
		tuple->t_data->t_hoff > tuple_len)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("mmlite: the change message at %X/%X does not hold a row of \"%s\"",
						(uint32) (lsn >> 32), (uint32) lsn, RelationGetRelationName(rel))));

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

/* Our messages to `change_cb`, every other one to pgoutput's `message_cb` (none in 13). */
static void
route_message(LogicalDecodingContext *ctx, ReorderBufferTXN *txn, XLogRecPtr lsn, bool transactional,
			  const char *prefix, Size size, const char *message,
			  LogicalDecodeChangeCB change_cb, LogicalDecodeMessageCB message_cb)
{
	if (strcmp(prefix, MMLITE_CHANGE_MESSAGE_PREFIX) == 0)
		decode_change_message(ctx, txn, lsn, transactional, size, message, change_cb);
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
	cb->message_cb = mmlite_message;
#if PG_VERSION_NUM >= 140000
	pgoutput_stream_change = cb->stream_change_cb;
	pgoutput_stream_message = cb->stream_message_cb;
	if (pgoutput_stream_change != NULL)
		cb->stream_message_cb = mmlite_stream_message;
#endif
}
