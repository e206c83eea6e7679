/* Helpers the native triggers share (mmlite_tables.h). */
#include "mmlite_tables.h"

#include "access/stratnum.h"
#include "catalog/pg_attribute.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

int
mmlite_column_index(TupleDesc desc, const char *name)
{
	for (int i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return i;
	}
	return -1;
}

bool
mmlite_text_equals(Datum value, const char *cstring)
{
	text	   *t = DatumGetTextPP(value);
	size_t		len = strlen(cstring);

	return VARSIZE_ANY_EXHDR(t) == len && memcmp(VARDATA_ANY(t), cstring, len) == 0;
}

void
mmlite_key_equality(Relation index, Oid *cached_index, FmgrInfo *equality)
{
	if (*cached_index == RelationGetRelid(index))
		return;
	for (int i = 0; i < IndexRelationGetNumberOfKeyAttributes(index); i++)
	{
		Oid			type = index->rd_opcintype[i];
		Oid			op = get_opfamily_member(index->rd_opfamily[i], type, type, BTEqualStrategyNumber);

		if (!OidIsValid(op))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_FUNCTION),
					 errmsg("mmlite: no equality operator for column %d of index \"%s\"",
							i + 1, RelationGetRelationName(index))));
		fmgr_info_cxt(get_opcode(op), &equality[i], TopMemoryContext);
	}
	*cached_index = RelationGetRelid(index);
}

Datum
mmlite_call_trigger_function(FmgrInfo *function, FunctionCallInfo outer)
{
	LOCAL_FCINFO(call, 0);
	Datum		result;

	InitFunctionCallInfoData(*call, function, 0, InvalidOid, outer->context, NULL);
	result = FunctionCallInvoke(call);
	outer->isnull = call->isnull;
	return result;
}
