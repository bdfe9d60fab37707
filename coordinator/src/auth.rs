//! Bearer-token authentication of agents: the token travels in the `authorization` metadata
//! of every call (`Bearer <token>`) and is checked by [`Token::check`], in constant time. The
//! token type is shared with the agent, so it lives in `stampede_proto::token`.

pub use stampede_proto::token::{Token, TokenError};
