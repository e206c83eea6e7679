#ifndef MMLITE_VERSION_H
#define MMLITE_VERSION_H

/* mmlite's version, the text of the repository's VERSION file (a trailing line break included). */
const char *mmlite_core_version(void);

#endif
