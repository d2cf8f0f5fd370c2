//! IKE message decoding: the header, the payload chain, the payloads inside an SK
//! payload, and the per-exchange rules the engine checks them against.

#![no_main]

use esptun::wire::payload::decode_chain;
use esptun::wire::{Message, PayloadType, Reader, rules};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let _ = rules::check(m.header.exchange, m.header.flags.response(), &m.payloads);
        let _ = m.summary();
    }
    // The same bytes as the decrypted contents of an SK payload whose Next Payload
    // field is the first byte.
    if let Some((&first, rest)) = data.split_first() {
        let _ = decode_chain(PayloadType(first), &mut Reader::new(rest));
    }
});
