//! resample (under construction by its owner; replaced in the next commit).
