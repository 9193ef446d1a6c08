// Progressive enhancement only: every page works without it.
// Forms marked data-confirm ask before they are sent.
document.addEventListener("submit", (event) => {
  const question = event.target.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
