use super::*;

#[test]
fn config_errors_name_the_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("{", "", "not valid JSON: unexpected end of input"),
        (r#"{"service":"x"}"#, "service", "unknown field"),
        ("{}", "redaction.hmac_key", ""),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"api"}]}"#,
            "routes[0].path",
            "",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","method":"get"}]}"#,
            "routes[0].method",
            "uppercase",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a/{id}","order_id":{"path":"x"}}]}"#,
            "routes[0].order_id.path",
            "not a variable",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","order_id":{"response_body":"/id"}}]}"#,
            "routes[0].order_id.response_body",
            "not bodies",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","status":{"header":"x","attribute":"y"}}]}"#,
            "routes[0].status",
            "exactly one",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","kind":"sideways"}]}"#,
            "routes[0].kind",
            "unknown variant",
        ),
        (
            r#"{"redaction":{"enabled":false},"routes":[{"path":"/a","attributes":{"order.status.previous":"x"}}]}"#,
            "routes[0].attributes.order.status.previous",
            "set by ordertrace",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"name":"m"}]}"#,
            "messages[0]",
            "destination or routing_key",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"destination":"o","order_id":{"path":"id"}}]}"#,
            "messages[0].order_id.path",
            "only routes",
        ),
        (
            r#"{"redaction":{"enabled":false},"messages":[{"destination":"o","status":{"attribute":""}}]}"#,
            "messages[0].status.attribute",
            "",
        ),
        (
            r#"{"redaction":{"enabled":false},"lifecycle":{"table_size":0}}"#,
            "lifecycle.table_size",
            "",
        ),
    ];
    for (json, field, msg) in cases {
        match CollectorConfig::from_json(json.as_bytes()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(e) => {
                assert_eq!(&e.field, field, "field for {json}: {e}");
                assert!(e.message().contains(msg), "message for {json}: {e}");
            }
        }
    }
}

#[test]
fn key_from_the_environment_through_the_resolver() {
    let c = CollectorConfig::from_json_with_key_resolver(
        br#"{"redaction":{"hmac_key_env":"OT_KEY"}}"#,
        &mut |src| match src {
            HmacKeySource::Env("OT_KEY") => Ok("0123456789abcdef0123".into()),
            _ => Err("no".into()),
        },
    );
    assert!(c.is_ok());
    let e = CollectorConfig::from_json_with_key_resolver(
        br#"{"redaction":{"hmac_key_env":"OT_KEY"}}"#,
        &mut |_| Err("not set".into()),
    )
    .unwrap_err();
    assert_eq!(e.field, "redaction.hmac_key_env");
}
