#!/bin/sh
# Train Segmenter-ViT-S/16 on ade20k with PIR-AT's recipe, clean (its counterpart) (config/ade20k/ade20k_segmenter_vit_s_clean.yaml):
# sh tool_train/ade20k/segmenter_vit_s_train_clean.sh [key value ...]
exec sh tool_train/train.sh ade20k segmenter_vit_s_clean config/ade20k/ade20k_segmenter_vit_s_clean.yaml "$@"
