//! The protobuf codec of every slotd service and client (build.rs `codec_path`): tonic's prost
//! codec with a small first encode buffer.
//!
//! tonic allocates the encoder's `buffer_size` eagerly for every response, and a server stream
//! keeps that allocation for its whole life (the bytes it sends are split off the same
//! buffer). The default is 8 KiB; a waiting-room crowd holds one `Watch` stream per waiter,
//! whose messages are a few dozen bytes, so 8 KiB per waiter was most of a stream's memory.
//! A larger message grows the buffer as it is written (prost writes into a growable
//! `BytesMut`), so a big ListSlots answer costs a few reallocations, nothing else. Decoding
//! keeps tonic's defaults: a request's buffer lives only while it is decoded.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The first allocation of a response's encode buffer: a Watch update or a booking answer
/// fits; anything larger grows it.
pub const ENCODE_BUFFER_BYTES: usize = 256;
/// tonic's default: ready stream messages are batched up to this many bytes per write.
pub const YIELD_THRESHOLD_BYTES: usize = 32 * 1024;

/// See the module comment.
#[derive(Debug, Clone)]
pub struct SlotdCodec<T, U>(PhantomData<(T, U)>);

// By hand: a derived Default would ask T and U to be Default.
impl<T, U> Default for SlotdCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SlotdCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(
            ENCODE_BUFFER_BYTES,
            YIELD_THRESHOLD_BYTES,
        ))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}
