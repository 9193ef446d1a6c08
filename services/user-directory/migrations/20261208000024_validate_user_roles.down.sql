-- Nothing to undo: a validated constraint is the same constraint (0021's down drops it).
SELECT 1;
