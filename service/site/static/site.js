// Progressive enhancement only: every page works without this file.
// A copy button beside the verification command.
document.addEventListener("DOMContentLoaded", () => {
  for (const pre of document.querySelectorAll("pre.command")) {
    if (!navigator.clipboard) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Copy the commands";
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(pre.innerText);
      button.textContent = "Copied";
    });
    pre.after(button);
  }
});
