//! Real data sets (IDX files) and the task streams built from them.
