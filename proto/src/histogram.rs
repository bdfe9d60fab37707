//! The histogram codec: HDR histograms travel as V2 + DEFLATE bytes and merge exactly.
