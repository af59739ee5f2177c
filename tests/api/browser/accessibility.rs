//! The inbox with the keyboard alone, names for every control, and text contrast: what a
//! keyboard or screen-reader user needs, checked in the browser rather than read off the CSS.

use std::time::Duration;

use cpaas_sim::InboundSpec;
use serde_json::{Value, json};

use super::{Browser, inbound};
use crate::delivery::{auto_callbacks, email, whatsapp};
use crate::helpers::spawn_app_with_sim_config;

const TAB: &str = "\u{E004}";
const ENTER: &str = "\u{E007}";

/// Where the focus is: the page region (in visual order) and the element.
const FOCUS: &str = "const e = document.activeElement; \
    const regions = [['.skip', 'skip'], ['header.top', 'header'], ['nav.views', 'views'], ['#list', 'list'], \
      ['.thread-head', 'head'], ['.messages', 'messages'], ['.composer', 'composer'], ['.side', 'side']]; \
    const region = (regions.find(([css]) => e.closest(css)) || [null, e === document.body ? 'body' : 'other'])[1]; \
    const style = getComputedStyle(e); \
    const ring = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2; \
    let around = e.parentElement; \
    while (around && getComputedStyle(around).backgroundColor === 'rgba(0, 0, 0, 0)') around = around.parentElement; \
    const behind = around ? getComputedStyle(around).backgroundColor : 'rgb(255, 255, 255)'; \
    arguments[0]([region, e.id || e.className || e.tagName.toLowerCase(), ring, style.outlineColor, behind]);";

/// WCAG's contrast ratio of two CSS `rgb(…)` colours.
fn contrast(a: &str, b: &str) -> f64 {
    let luminance = |css: &str| {
        let parts: Vec<f64> = css
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .split([',', ')', ' '])
            .filter_map(|p| p.parse().ok())
            .collect();
        let channel = |v: f64| {
            let v = v / 255.0;
            if v <= 0.03928 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
        };
        0.2126 * channel(parts[0]) + 0.7152 * channel(parts[1]) + 0.0722 * channel(parts[2])
    };
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

#[tokio::test]
async fn an_agent_tabs_from_the_skip_link_through_list_thread_composer_and_side_panel_in_order() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    whatsapp(&app, &tenant).await;
    let agent = app.create_agent(&tenant, "ann@alpine.example", "agent").await;
    inbound(&sim, "Only a keyboard here").await;
    let id = app.newest_conversation(&tenant, 1).await;
    let browser = Browser::start().await;
    browser.login(&app, &tenant, &agent.email, &agent.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.find("#live.online").await;

    // The first Tab shows the skip link; Enter on it lands on the list, the next Tab on its
    // first conversation.
    browser.press(TAB).await;
    assert_eq!(browser.script(FOCUS).await[0], "skip");
    let shown = browser.script("arguments[0](document.activeElement.getBoundingClientRect().top >= 0);").await;
    assert_eq!(shown, true, "the focused skip link is on screen");
    browser.screenshot("skip-link").await;
    browser.press(ENTER).await;
    browser.press(TAB).await;
    let focus = browser.script(FOCUS).await;
    assert_eq!((&focus[0], focus[1].as_str().unwrap_or_default().contains("conversation")), (&json!("list"), true));
    // Another customer writes: the list is refreshed under the focus, which stays on the same
    // conversation rather than falling back to the page.
    sim.post_inbound(InboundSpec::Meta {
        phone_number_id: "106540352242922".into(),
        from: "4915187654321".into(),
        text: "Someone else".into(),
    })
    .await
    .unwrap();
    browser.wait_for_text("#list", "Someone else", Duration::from_secs(5)).await;
    let kept =
        browser.script("arguments[0](document.activeElement.dataset.id || document.activeElement.tagName);").await;
    assert_eq!(kept, json!(id), "a refresh of the list dropped the focus");
    browser.screenshot("list-focus-after-refresh").await;

    // Claim with the keyboard: the refresh puts the focus on Release, where Claim was.
    browser.script("document.querySelector('button[data-action=claim]').focus(); arguments[0](true);").await;
    browser.press(ENTER).await;
    browser.wait_for_text(".thread-head .meta", "you", Duration::from_secs(5)).await;
    let focused =
        browser.script("arguments[0](document.activeElement.dataset.action || document.activeElement.tagName);").await;
    assert_eq!(focused, "release", "the refresh dropped the focus");

    // Typing a reply while the customer writes: the new message is said once in the status
    // region, the text box keeps the focus and the draft.
    browser.script("document.querySelector('#reply').focus(); arguments[0](true);").await;
    browser.press("D").await;
    inbound(&sim, "Are you still there?").await;
    browser.wait_for_text("#announce", "New message: Are you still there?", Duration::from_secs(5)).await;
    let kept = browser
        .script("const r = document.querySelector('#reply'); arguments[0]([r.value, document.activeElement === r]);")
        .await;
    assert_eq!(kept, json!(["D", true]));
    let live = browser.script("arguments[0](document.querySelector('#thread').getAttribute('aria-live'));").await;
    assert_eq!(live, Value::Null, "the whole thread is a live region again: every refresh would be read out");

    // From the top again: every stop has a visible ring, and the regions come in visual order.
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.find("#live.online").await;
    let order = ["skip", "header", "views", "list", "head", "messages", "composer", "side"];
    let mut stops: Vec<Value> = Vec::new();
    for _ in 0..80 {
        browser.press(TAB).await;
        let focus = browser.script(FOCUS).await;
        if !stops.is_empty() && !order.contains(&focus[0].as_str().unwrap_or_default()) {
            break; // past the last control: the focus left the page
        }
        if focus[0] == "side" && !stops.iter().any(|stop| stop[0] == "side") {
            browser.screenshot("focus-side-panel").await;
        }
        stops.push(focus);
    }
    let regions: Vec<&str> = stops.iter().map(|stop| stop[0].as_str().unwrap_or_default()).collect();
    let rank = |region: &str| order.iter().position(|r| *r == region).unwrap_or_else(|| panic!("{region}: {stops:?}"));
    assert!(regions.windows(2).all(|pair| rank(pair[0]) <= rank(pair[1])), "focus went back: {regions:?}");
    for region in order {
        assert!(regions.contains(&region), "the keyboard never reached {region}: {stops:#?}");
    }
    let reached = |id: &str| stops.iter().any(|stop| stop[1] == id);
    assert!(reached("reply"), "the composer's text box: {stops:#?}");
    assert!(stops.iter().any(|stop| stop[0] == "list" && stop[1].as_str().unwrap().contains("conversation")));
    // A ring shows, and stands out from what is around it (WCAG: 3:1 for such indicators).
    let faint = |stop: &&Value| {
        stop[2] != true || contrast(stop[3].as_str().unwrap_or_default(), stop[4].as_str().unwrap_or_default()) < 3.0
    };
    let without_ring: Vec<&Value> = stops.iter().filter(faint).collect();
    assert!(without_ring.is_empty(), "focused without a visible ring: {without_ring:#?}");
}

/// Text whose colour against its background (the nearest ancestor with one) is below WCAG AA:
/// 4.5:1, or 3:1 for large text; placeholders count as text; a translucent colour is blended
/// over its background first.
const LOW_CONTRAST: &str = "const parse = c => { const [r, g, b, a = 1] = c.match(/[\\d.]+/g).map(Number); return {r, g, b, a}; }; \
    const lum = ({r, g, b}) => [r, g, b].map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }) \
      .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0); \
    const ratio = (x, y) => { const [a, b] = [lum(x), lum(y)].sort((p, q) => q - p); return (a + 0.05) / (b + 0.05); }; \
    const background = e => { for (; e; e = e.parentElement) { const c = parse(getComputedStyle(e).backgroundColor); if (c.a > 0.5) return c; } return {r: 255, g: 255, b: 255, a: 1}; }; \
    const low = []; \
    for (const e of document.querySelectorAll('body *')) { \
      const style = getComputedStyle(e); const box = e.getBoundingClientRect(); \
      if (box.width <= 1 || box.height <= 1 || style.visibility !== 'visible' || e.closest('[hidden]')) continue; \
      const size = parseFloat(style.fontSize); const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700); \
      const checks = []; \
      if ([...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) checks.push(['text', style.color]); \
      if (e.placeholder) checks.push(['placeholder', getComputedStyle(e, '::placeholder').color]); \
      for (const [what, color] of checks) { \
        const [fg, bg] = [parse(color), background(e)]; \
        const seen = {r: fg.a * fg.r + (1 - fg.a) * bg.r, g: fg.a * fg.g + (1 - fg.a) * bg.g, b: fg.a * fg.b + (1 - fg.a) * bg.b}; \
        const r = ratio(seen, bg); \
        if (r < (large ? 3 : 4.5)) low.push(`${what} of ${e.outerHTML.slice(0, 80)}: ${r.toFixed(2)}`); \
      } \
    } \
    arguments[0](low);";

#[tokio::test]
async fn every_control_has_a_name_and_all_text_meets_aa_contrast() {
    let (app, sim) = spawn_app_with_sim_config(|_| {}, auto_callbacks()).await;
    let tenant = app.create_tenant("alpine").await;
    email(&app, &tenant).await;
    let admin = app.create_agent(&tenant, "boss@alpine.example", "admin").await;
    let canned = json!({"short_code": "thanks", "text": "Thank you!"});
    assert_eq!(app.post("/api/v1/canned-responses", &tenant.api_key, canned).await.status(), 201);
    sim.post_inbound(InboundSpec::SesInbound {
        from: "ann.customer@example.org".into(),
        to: "support@mail.alpine.example".into(),
        subject: "Contrast".into(),
        text: "Can everyone read this?".into(),
        in_reply_to: None,
    })
    .await
    .unwrap();
    let id = app.newest_conversation(&tenant, 1).await;
    let path = format!("/api/v1/conversations/{id}");
    let reply = app.post(&format!("{path}/messages"), &tenant.api_key, json!({"content": {"text": "Yes."}})).await;
    assert_eq!(reply.status(), 202);
    let note = app.post(&format!("{path}/notes"), &tenant.api_key, json!({"text": "A note"})).await;
    assert_eq!(note.status(), 201);

    let browser = Browser::start().await;
    browser.goto(&app.url("/login")).await;
    browser.find("#login-form").await;
    let low = browser.script(LOW_CONTRAST).await;
    assert_eq!(low, json!([]), "on the login page");
    browser.login(&app, &tenant, &admin.email, &admin.password).await;
    browser.goto(&app.url(&format!("/inbox?view=all&c={id}"))).await;
    browser.wait_for_text("#thread .messages", "A note", Duration::from_secs(5)).await;
    browser.find("#live.online").await;
    // Open what is folded, so its controls are rendered and checked too.
    browser.script("document.querySelectorAll('details').forEach(d => { d.open = true; }); arguments[0](true);").await;
    browser.type_into("#merge-q", "ann").await;
    browser.find("#merge-results [data-merge-pick], #merge-results li").await;

    let controls = browser.find_all("a[href], button, input, select, textarea, summary").await;
    assert!(controls.len() > 20, "only {} controls", controls.len());
    let mut nameless = Vec::new();
    for control in &controls {
        // What is not rendered (the help dialog, the merge confirmation) has no name to give.
        let rendered = browser.script_on(control, "return arguments[0].getClientRects().length > 0;").await;
        if rendered == true && browser.accessible_name(control).await.trim().is_empty() {
            nameless.push(browser.script_on(control, "return arguments[0].outerHTML.slice(0, 120);").await);
        }
    }
    assert!(nameless.is_empty(), "controls without an accessible name: {nameless:#?}");
    let low = browser.script(LOW_CONTRAST).await;
    assert_eq!(low, json!([]), "in the inbox");
    browser.screenshot("inbox-all-open").await;
    // On a phone the side panel comes last, below the composer, as the keyboard reaches it.
    browser.script("document.querySelectorAll('details').forEach(d => { d.open = false; }); arguments[0](true);").await;
    browser.command(reqwest::Method::POST, "/window/rect", Some(json!({"width": 390, "height": 844}))).await;
    let order = browser
        .script(
            "const top = css => document.querySelector(css).getBoundingClientRect().top; \
             arguments[0](top('.composer') < top('.side') && top('.messages') < top('.composer'));",
        )
        .await;
    assert_eq!(order, true, "on a phone: messages, composer, then the side panel");
    browser.screenshot("inbox-phone").await;
}
