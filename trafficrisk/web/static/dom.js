// Building DOM nodes. Text from the server only ever goes in as textContent.

export function el(tag, { className, text, ...attributes } = {}, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function fromTemplate(id) {
  return document.getElementById(id).content.firstElementChild.cloneNode(true);
}

export const RISK_COLOURS = { none: "#9aa0a6", low: "#2e9d4f", medium: "#e8a317", high: "#d93025" };
export const RISK_LEVELS = ["none", "low", "medium", "high"];

export function timeOf(unixSeconds) {
  return new Date(unixSeconds * 1000).toLocaleTimeString();
}

// Text on a dark plate, so it stays readable over bright road and sky.
export function canvasLabel(ctx, text, x, y, colour) {
  const width = ctx.measureText(text).width + 6;
  ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
  ctx.fillRect(x, y - 12, width, 14);
  ctx.fillStyle = colour;
  ctx.fillText(text, x + 3, y - 1);
}

// A canvas laid over an image, sized to it and cleared; `scale` maps the frame's own
// pixels (width x height) to the canvas.
export function canvasOver(img, canvas, width, height, font) {
  canvas.width = img.clientWidth;
  canvas.height = img.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = font;
  return { ctx, scale: { x: canvas.width / width, y: canvas.height / height } };
}
