//! `vprctl audit verify`: reads the whole audit trail through
//! ListAuditEntries and checks its hash chain on the client side.

use serde_json::json;
use vpr_control::convert::audit_row;
use vpr_control::pb;
use vpr_store::{verify_audit_chain, AUDIT_GENESIS_HASH};

use crate::{status_message, Client, PAGE_SIZE};

/// Checks the chain page by page and prints the result. Returns exit code 0
/// for an intact chain and 1 for a broken one.
pub async fn verify(client: &mut Client, as_json: bool) -> Result<i32, String> {
    let mut request = pb::ListAuditEntriesRequest {
        page_size: PAGE_SIZE,
        page_token: String::new(),
    };
    let mut previous_hash = AUDIT_GENESIS_HASH.to_owned();
    let mut last_seq = 0;
    let mut entries = 0usize;
    let mut broken_seq = None;

    loop {
        let response = client
            .list_audit_entries(request.clone())
            .await
            .map_err(status_message)?
            .into_inner();
        let rows: Vec<_> = response.entries.iter().map(audit_row).collect();

        // The chain check covers seq steps inside a page; the step into the
        // page is checked here.
        if let Some(first) = rows.first() {
            if first.seq != last_seq + 1 {
                broken_seq = Some(first.seq);
                break;
            }
        }
        if let Err(seq) = verify_audit_chain(&rows, &previous_hash) {
            broken_seq = Some(seq);
            break;
        }
        entries += rows.len();
        if let Some(last) = rows.last() {
            previous_hash = last.hash.clone();
            last_seq = last.seq;
        }

        if response.next_page_token.is_empty() {
            break;
        }
        request.page_token = response.next_page_token;
    }

    match broken_seq {
        None if as_json => println!("{}", json!({ "intact": true, "entries": entries })),
        None => println!("audit chain intact: {entries} entries"),
        Some(seq) if as_json => println!("{}", json!({ "intact": false, "broken_seq": seq })),
        Some(seq) => println!("audit chain broken at seq {seq}"),
    }
    Ok(if broken_seq.is_some() { 1 } else { 0 })
}
