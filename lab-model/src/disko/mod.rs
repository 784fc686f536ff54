//! disko disk specs: parsing, normalising exactly as disko does, and planning.
