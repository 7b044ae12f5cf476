//! `sluice deploy FILE`: upload a feed module and follow the server's NDJSON progress
//! events (dependency resolution can take a while) until it reports the deployed feeds
//! or a problem (e.g. a 422 naming file:line).

use super::{Ctx, absolute_url, seg};
use crate::cli::DeployArgs;
use crate::http::{ClientError, LineBuffer, Problem};
use crate::output::{field, print_json, print_out, table};
use crate::progress::Progress;
use anyhow::{Context, Result};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

/// One line of the deploy stream, as understood by the client.
#[derive(Debug, PartialEq)]
pub(crate) enum Event {
    Progress(String),
    /// A line of output from the server's work for this deploy (runtime = kubernetes: the
    /// image build's log), shown as it comes.
    Log(String),
    Done(Vec<Value>),
    Error(Problem),
}

pub(crate) fn parse_event(line: &str) -> Result<Event> {
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("the server sent a deploy event that is not JSON: {line}"))?;
    match v.get("event").and_then(Value::as_str) {
        Some("progress") => Ok(Event::Progress(field(&v, "message"))),
        Some("log") => Ok(Event::Log(format!(
            "{} | {}",
            field(&v, "feed"),
            field(&v, "line")
        ))),
        Some("done") => Ok(Event::Done(
            v.get("feeds")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        )),
        Some("error") => {
            let problem = v.get("problem").cloned().unwrap_or(Value::Null);
            let status = problem.get("status").and_then(Value::as_u64).unwrap_or(422) as u16;
            Ok(Event::Error(Problem::parse(status, &problem.to_string())))
        }
        // Newer servers may add event kinds; showing nothing beats failing the deploy.
        _ => Ok(Event::Progress(String::new())),
    }
}

pub async fn deploy(ctx: Ctx, a: DeployArgs) -> Result<()> {
    let source = std::fs::read_to_string(&a.file)
        .with_context(|| format!("cannot read feed file {}: check the path", a.file.display()))?;
    let filename = a
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ws = ctx.workspace().await?;
    let progress = Progress::start(ctx.tty, &format!("uploading {filename} to workspace {ws}"));
    let req = ctx
        .client
        .request(
            Method::POST,
            &format!("/api/v1/workspaces/{}/deploy", seg(&ws)),
        )
        .header(reqwest::header::ACCEPT, "application/x-ndjson")
        .json(&json!({ "source": source, "filename": filename }));
    let resp = ctx.client.send(req).await?;

    let streaming = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson"));
    let feeds = if streaming {
        follow(&ctx, &progress, resp).await?
    } else {
        // A server that ignores Accept answers 201 with the final document.
        let doc = ctx.client.json_body(resp).await?;
        doc.get("feeds")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let secs = progress.elapsed().as_secs_f64();
    progress.finish();

    if ctx.json() {
        return print_json(&json!({ "workspace": ws, "feeds": feeds }));
    }
    let rows: Vec<Vec<String>> = feeds
        .iter()
        .map(|f| {
            vec![
                field(f, "name"),
                field(f, "revision"),
                absolute_url(ctx.client.base(), &field(f, "url")),
            ]
        })
        .collect();
    print_out(&table(&["FEED", "REVISION", "URL"], &rows))?;
    eprintln!(
        "{}",
        ctx.style.dim(&format!(
            "deployed {} feed{} to workspace {ws} in {secs:.1}s",
            feeds.len(),
            if feeds.len() == 1 { "" } else { "s" }
        ))
    );
    Ok(())
}

async fn follow(ctx: &Ctx, progress: &Progress, resp: reqwest::Response) -> Result<Vec<Value>> {
    let mut body = resp.bytes_stream();
    let mut lines = LineBuffer::default();
    let mut step: Option<String> = None;
    let mut handle = |line: &str| -> Result<Option<Vec<Value>>> {
        match parse_event(line)? {
            Event::Progress(m) if m.is_empty() => Ok(None),
            Event::Progress(m) => {
                // On a terminal the finished step stays visible above the spinner.
                if let Some(prev) = step.replace(m.clone()).filter(|_| ctx.tty) {
                    progress.println(&ctx.style.dim(&format!("✓ {prev}")));
                }
                progress.set_message(&m);
                Ok(None)
            }
            Event::Log(l) => {
                progress.println(&ctx.style.dim(&l));
                Ok(None)
            }
            Event::Done(feeds) => {
                if let Some(prev) = step.take().filter(|_| ctx.tty) {
                    progress.println(&ctx.style.dim(&format!("✓ {prev}")));
                }
                Ok(Some(feeds))
            }
            Event::Error(p) => Err(ClientError::Api(p).into()),
        }
    };
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ctx.client.transport_error(&e))?;
        for line in lines.push(&chunk) {
            if let Some(feeds) = handle(&line)? {
                return Ok(feeds);
            }
        }
    }
    if let Some(feeds) = lines
        .finish()
        .map(|line| handle(&line))
        .transpose()?
        .flatten()
    {
        return Ok(feeds);
    }
    anyhow::bail!(
        "the server closed the deploy stream before reporting a result; run `sluice feeds` to see whether the deploy happened"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed() {
        assert_eq!(
            parse_event(r#"{"event":"progress","message":"resolving dependencies: pandas>=2"}"#)
                .unwrap(),
            Event::Progress("resolving dependencies: pandas>=2".into())
        );
        match parse_event(
            r#"{"event":"done","feeds":[{"name":"a","revision":2,"url":"/feeds/demo/a"}]}"#,
        )
        .unwrap()
        {
            Event::Done(f) => assert_eq!(f[0]["revision"], 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_event(r#"{"event":"heartbeat"}"#).unwrap(),
            Event::Progress(String::new())
        );
        assert_eq!(
            parse_event(r#"{"event":"log","feed":"sales","line":"Collecting pandas"}"#).unwrap(),
            Event::Log("sales | Collecting pandas".into())
        );
        assert!(parse_event("not json").is_err());
    }

    #[test]
    fn error_event_keeps_code_detail_and_location() {
        let line = r#"{"event":"error","problem":{"status":422,"code":"invalid_feed_module","detail":"NameError: name 'pd' is not defined","file":"top.py","line":12}}"#;
        match parse_event(line).unwrap() {
            Event::Error(p) => assert_eq!(
                ClientError::Api(p).to_string(),
                "error[invalid_feed_module]: NameError: name 'pd' is not defined\n  --> top.py:12"
            ),
            other => panic!("{other:?}"),
        }
    }
}
